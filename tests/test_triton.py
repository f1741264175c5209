"""Triton model repository: every config.pbtxt parses into Triton's own ModelConfig."""

from __future__ import annotations

import pytest
from deploy_helpers import export_tiny
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from asc_deploy.deploy.quantize import quantize_artifact
from asc_deploy.deploy.triton import write_triton_repository
from asc_deploy.errors import UserError
from asc_deploy.fsutil import sha256_file


def _parse(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_for_classification_qa_and_fp16(tiny_model_dir, tmp_path):
    _, cls, _ = export_tiny(tiny_model_dir, tmp_path, "bert", "classification")
    _, qa, _ = export_tiny(tiny_model_dir, tmp_path, "roberta", "question-answering")
    quantize_artifact(cls, cls.parent / "fp16", "fp16", provider="cpu")
    repo = tmp_path / "model_repository"
    write_triton_repository(
        {"cls": cls, "qa": qa, "cls-fp16": cls.parent / "fp16"}, repo, max_batch_size=16
    )

    c = _parse(repo / "cls" / "config.pbtxt")
    assert c.name == "cls" and c.backend == "onnxruntime" and c.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in c.input] == [
        (n, model_config_pb2.TYPE_INT64, [-1])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in c.output] == [
        ("logits", model_config_pb2.TYPE_FP32, [2])
    ]
    assert list(c.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert c.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU

    q = _parse(repo / "qa" / "config.pbtxt")
    assert [i.name for i in q.input] == ["input_ids", "attention_mask"]  # RoBERTa: no segment ids
    assert [(o.name, list(o.dims)) for o in q.output] == [
        ("start_logits", [-1]),
        ("end_logits", [-1]),
    ]

    f = _parse(repo / "cls-fp16" / "config.pbtxt")
    assert f.output[0].data_type == model_config_pb2.TYPE_FP32  # fp16 inside, fp32 at the boundary
    assert sha256_file(repo / "cls" / "1" / "model.onnx") == sha256_file(cls / "model.onnx")


def test_fp16_outputs_map_to_type_fp16():
    from asc_deploy.deploy.triton import config_pbtxt, parse_config

    manifest = {
        "inputs": [{"name": "input_ids", "shape": ["b", "s"], "dtype": "int64"}],
        "outputs": [{"name": "logits", "shape": ["b", 3], "dtype": "float16"}],
    }
    config = parse_config(config_pbtxt("m", manifest, max_batch_size=8, instance_kind="KIND_GPU"))
    assert config.output[0].data_type == model_config_pb2.TYPE_FP16 and list(
        config.output[0].dims
    ) == [3]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_tampered_artifact_or_bad_name_writes_nothing(tiny_model_dir, tmp_path):
    _, cls, _ = export_tiny(tiny_model_dir, tmp_path)
    repo = tmp_path / "repo"
    with pytest.raises(UserError, match="not usable by Triton"):
        write_triton_repository({"bad name": cls}, repo)
    (cls / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(UserError, match="re-export"):
        write_triton_repository({"cls": cls}, repo)
    assert not repo.exists()
