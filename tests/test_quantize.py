"""int8 dynamic / static and fp16 variants: they load, are smaller, the known traps stay fixed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from deploy_helpers import export_tiny, features_for

from asc_deploy.deploy.optimize import optimize_artifact
from asc_deploy.deploy.quantize import ISA_PRESETS, detect_isa, quantize_artifact
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
    with pytest.raises(UserError, match="not available"):
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
    assert set(ISA_PRESETS[isa]) == {"weight_type", "reduce_range", "per_channel"}


def test_isa_presets_follow_saturation_guidance():
    assert ISA_PRESETS["avx2"]["weight_type"] == "QUInt8"
    assert ISA_PRESETS["avx512"]["reduce_range"] is True
    assert ISA_PRESETS["avx512_vnni"]["reduce_range"] is False
