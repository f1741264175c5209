"""The TensorRT EP profile: exact provider-option strings, and the worker wiring them in."""

from asc_deploy.measure import worker
from asc_deploy.measure.tensorrt import tensorrt_provider_options


def test_profile_covers_the_shape_range_for_every_input(tmp_path):
    options = tensorrt_provider_options(
        ["input_ids", "attention_mask"], opt_shape=(8, 128), max_shape=(32, 384), cache_dir=tmp_path
    )
    assert options["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert options["trt_profile_opt_shapes"] == "input_ids:8x128,attention_mask:8x128"
    assert options["trt_profile_max_shapes"] == "input_ids:32x384,attention_mask:32x384"
    assert options["trt_fp16_enable"] == "1" and options["trt_engine_cache_enable"] == "1"
    assert options["trt_engine_cache_path"] == str(tmp_path)
    # max never below opt: a cell larger than the plan's maximum still fits its own profile.
    small = tensorrt_provider_options(["x"], (64, 512), (8, 128), fp16=False, cache_dir=tmp_path)
    assert small["trt_profile_max_shapes"] == "x:64x512" and small["trt_fp16_enable"] == "0"


def test_worker_builds_options_only_for_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setenv("ASC_TRT_CACHE", str(tmp_path / "cache"))
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input_ids"], ["out"])],
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("out", TensorProto.INT64, ["b", "s"])],
    )
    path = tmp_path / "m.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what onnxruntime reads
    onnx.save(model, path)
    spec = {"model_path": str(path), "batch": 1, "sequence": 16, "max_shape": [8, 128]}
    assert worker._tensorrt_options({**spec, "provider": "cpu"}) is None
    options = worker._tensorrt_options({**spec, "provider": "tensorrt"})
    assert options["trt_profile_opt_shapes"] == "input_ids:1x16"
    assert options["trt_profile_max_shapes"] == "input_ids:8x128"
    assert options["trt_engine_cache_path"] == str(tmp_path / "cache")
