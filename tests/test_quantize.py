"""int8 dynamic / static and fp16 variants: they load, are smaller, the known traps stay fixed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from deploy_helpers import export_tiny, features_for

from asc_deploy.deploy.optimize import optimize_artifact
from asc_deploy.deploy.quantize import ISA_PRESETS, detect_isa, int8_settings, quantize_artifact
from asc_deploy.errors import UserError
from asc_deploy.measure.ort_runner import create_session


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture
def fp32(tiny_model_dir, tmp_path):
    model_dir, dest, manifest = export_tiny(tiny_model_dir, tmp_path)
    return model_dir, dest, manifest


def test_dynamic_int8_loads_is_smaller_and_quantises_matmuls(fp32):
    model_dir, dest, parent = fp32
    q = quantize_artifact(dest, dest.parent / "int8-dynamic", "dynamic", isa="avx512_vnni")
    ops = _ops(dest.parent / "int8-dynamic" / "model.onnx")
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulInteger"] >= 4 * 6  # 6 per layer, 4 layers
    assert q["size_bytes"] < parent["size_bytes"]
    assert q["settings"]["weight_type"] == "QInt8" and not q["settings"]["reduce_range"]
    assert q["validation"]["prediction_agreement"] >= 0.9
    create_session(dest.parent / "int8-dynamic" / "model.onnx")


def test_dynamic_int8_of_a_fused_graph(fp32):
    """Trap: quantize_dynamic on fused Attention/SkipLayerNorm needs DefaultTensorType FLOAT."""
    _, dest, parent = fp32
    optimize_artifact(dest, dest.parent / "optimized")
    q = quantize_artifact(
        dest.parent / "optimized", dest.parent / "opt-int8", "dynamic", isa="avx2"
    )
    ops = _ops(dest.parent / "opt-int8" / "model.onnx")
    assert ops["QAttention"] == 4  # the fused attention itself was quantised
    assert q["size_bytes"] < parent["size_bytes"] / 2
    assert q["settings"]["weight_type"] == "QUInt8"  # avx2 preset: U8U8 avoids saturation
    assert q["parent"]["variant"] == "optimized"


def test_static_qdq_int8_is_calibrated_on_task_inputs(fp32):
    """Trap: quant_pre_process needs skip_symbolic_shape=True on these graphs."""
    model_dir, dest, parent = fp32
    feats = features_for(model_dir, "classification")
    q = quantize_artifact(
        dest,
        dest.parent / "int8-static",
        "static",
        isa="avx512_vnni",
        calibration_features=feats,
        calibration_samples=8,
    )
    ops = _ops(dest.parent / "int8-static" / "model.onnx")
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] >= 4 * 6
    assert q["transform"]["calibration_inputs"] == 8 and q["settings"]["calibrator"] == "minmax"
    assert q["size_bytes"] < parent["size_bytes"]
    assert q["validation"]["prediction_agreement"] >= 0.9


@pytest.mark.parametrize("calibrator", ["entropy", "percentile"])
def test_other_calibrators_are_selectable(fp32, calibrator):
    model_dir, dest, _ = fp32
    q = quantize_artifact(
        dest,
        dest.parent / calibrator,
        "static",
        isa="avx2",
        calibration_features=features_for(model_dir, "classification"),
        calibrator=calibrator,
    )
    assert q["transform"]["calibrator"] == calibrator
    create_session(dest.parent / calibrator / "model.onnx")


def test_empty_calibration_set_and_fused_parent_are_refused(fp32):
    _, dest, _ = fp32
    with pytest.raises(UserError, match="calibration set is empty"):
        quantize_artifact(dest, dest.parent / "s", "static", calibration_features=[])
    with pytest.raises(UserError, match="selects no inputs"):
        quantize_artifact(
            dest,
            dest.parent / "s",
            "static",
            calibration_features=[{"input_ids": [1]}],
            calibration_samples=0,
        )
    optimize_artifact(dest, dest.parent / "optimized")
    with pytest.raises(UserError, match="needs the fp32 artifact"):
        quantize_artifact(
            dest.parent / "optimized", dest.parent / "s", "static", calibration_features=[]
        )
    assert not (dest.parent / "s").exists()


def test_fp16_graph_loads_in_ort_and_stays_close(fp32):
    """Trap: onnxconverter_common's fp16 BERT graphs do not load; ORT's converter's do."""
    _, dest, _ = fp32
    q = quantize_artifact(dest, dest.parent / "fp16", "fp16", provider="cpu")
    model = onnx.load(str(dest.parent / "fp16" / "model.onnx"))
    fp16_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_weights) > 10
    assert q["transform"]["fused_attention"] == 4 and q["transform"]["fp16"]
    assert q["validation"]["max_abs_diff"] <= 5e-2
    session = create_session(dest.parent / "fp16" / "model.onnx")
    out = session.run(
        None,
        {
            "input_ids": np.array([[2, 7, 9, 3]]),
            "attention_mask": np.ones((1, 4), np.int64),
            "token_type_ids": np.zeros((1, 4), np.int64),
        },
    )[0]
    assert out.dtype == np.float32 and np.isfinite(out).all()  # fp32 at the boundary


def test_unknown_provider_writes_nothing(fp32):
    _, dest, _ = fp32
    with pytest.raises(UserError, match="nosuch"):
        quantize_artifact(dest, dest.parent / "fp16", "fp16", provider="nosuch")
    assert not (dest.parent / "fp16").exists()


@pytest.mark.parametrize(
    ("flags", "machine", "isa"),
    [
        ({"avx", "avx2", "fma"}, "x86_64", "avx2"),
        ({"avx2", "avx512f", "avx512bw"}, "x86_64", "avx512"),
        ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "avx512_vnni"),
        (set(), "aarch64", "arm64"),
    ],
)
def test_isa_detection_picks_the_preset(flags, machine, isa):
    assert detect_isa(flags, machine) == isa
    assert set(ISA_PRESETS[isa]) == {"weight_type", "reduce_range"}


@pytest.mark.parametrize(
    ("flags", "machine", "weight_type", "reduce_range"),
    [
        ({"avx", "avx2", "fma"}, "x86_64", "QUInt8", False),  # U8U8: no saturation to avoid
        ({"avx2", "avx512f", "avx512bw"}, "x86_64", "QInt8", True),  # s8 without VNNI saturates
        ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "QInt8", False),
        ({"avx512f", "avx512bw", "avx512vnni"}, "x86_64", "QInt8", False),  # other spelling
        ({"asimd", "asimddp"}, "aarch64", "QInt8", False),
    ],
)
def test_reduce_range_only_where_the_detected_isa_needs_it(
    flags, machine, weight_type, reduce_range
):
    settings = int8_settings(detect_isa(flags, machine))
    assert settings == {
        "weight_type": weight_type,
        "reduce_range": reduce_range,
        "per_channel": True,
    }
    assert int8_settings(detect_isa(flags, machine), per_channel=False)["per_channel"] is False


def _outlier_channel_artifact(tmp_path, tiny_tokenizer_dir):
    """A tiny BERT whose FFN has one output channel with 50x larger weights in every layer:
    one weight scale per tensor flattens every other channel to a few int8 levels."""
    import torch
    from conftest import tiny_model
    from transformers import AutoTokenizer

    from asc_deploy.deploy.export import export_artifact

    model = tiny_model("bert", "classification", 2)
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.intermediate.dense.weight[0].mul_(50)
    folder = tmp_path / "outlier"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_tokenizer_dir).save_pretrained(folder)
    dest = tmp_path / "exports" / "outlier" / "fp32"
    export_artifact(folder, dest, "classification", features_for(folder, "classification"))
    return folder, dest


def _largest_scale(path) -> int:
    """How many scales the widest weight scale tensor holds (1 = per tensor)."""
    model = onnx.load(str(path))
    return max(int(np.prod(i.dims)) for i in model.graph.initializer if "scale" in i.name)


def _ffn_weight_error(fp32_path, int8_path) -> float:
    """Worst |dequantised - fp32| weight of layer 0's FFN input, outlier channel left out."""
    from onnx.numpy_helper import to_array

    name = next(
        n.input[1]
        for n in onnx.load(str(fp32_path)).graph.node
        if n.name == "/bert/encoder/layer.0/intermediate/dense/MatMul"
    )
    fp32 = {i.name: to_array(i) for i in onnx.load(str(fp32_path)).graph.initializer}[name]
    int8 = {i.name: to_array(i) for i in onnx.load(str(int8_path)).graph.initializer}
    q, zero = int8[f"{name}_quantized"], int8[f"{name}_zero_point"]
    restored = (q.astype(np.float64) - zero) * int8[f"{name}_scale"]  # scales along columns
    return float(np.abs(restored - fp32)[:, 1:].max())  # column 0: the outlier channel


def test_per_channel_scales_keep_an_outlier_channel_from_ruining_the_rest(
    tmp_path, tiny_tokenizer_dir
):
    _, fp32 = _outlier_channel_artifact(tmp_path, tiny_tokenizer_dir)
    errors = {}
    for per_channel in (True, False):
        dest = fp32.parent / f"dynamic-{per_channel}"
        q = quantize_artifact(fp32, dest, "dynamic", isa="avx512_vnni", per_channel=per_channel)
        assert q["settings"]["per_channel"] is per_channel
        assert q["transform"]["per_channel"] is per_channel
        assert q["validation"]["passed"] and q["validation"]["against"] == "fp32 onnx"
        assert _largest_scale(dest / "model.onnx") == (64 if per_channel else 1)  # FFN width
        errors[per_channel] = _ffn_weight_error(fp32 / "model.onnx", dest / "model.onnx")
    # One scale per column: the ordinary columns keep int8's resolution (about max|w| / 254).
    assert errors[True] * 10 < errors[False]


def test_static_per_tensor_is_recorded_and_selectable(fp32):
    model_dir, dest, _ = fp32
    q = quantize_artifact(
        dest,
        dest.parent / "static-per-tensor",
        "static",
        isa="avx512",
        calibration_features=features_for(model_dir, "classification"),
        calibration_samples=4,
        per_channel=False,
    )
    assert q["settings"]["per_channel"] is False and q["settings"]["reduce_range"] is True
    assert q["settings"]["calibrator"] == "minmax" and q["transform"]["calibrator"] == "minmax"
    assert _largest_scale(dest.parent / "static-per-tensor" / "model.onnx") == 1


def test_calibrator_typo_is_refused_before_anything_is_written(fp32):
    model_dir, dest, _ = fp32
    with pytest.raises(UserError, match="unknown calibrator 'entropyy'"):
        quantize_artifact(
            dest,
            dest.parent / "typo",
            "static",
            calibration_features=features_for(model_dir, "classification"),
            calibrator="entropyy",  # type: ignore[arg-type]
        )
    assert not (dest.parent / "typo").exists()


def test_isa_presets_follow_saturation_guidance():
    assert ISA_PRESETS["avx2"]["weight_type"] == "QUInt8"
    assert ISA_PRESETS["avx512"]["reduce_range"] is True
    assert ISA_PRESETS["avx512_vnni"]["reduce_range"] is False
