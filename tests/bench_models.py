"""Tiny ONNX models and artifact folders for the benchmark harness tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
MAX_POSITIONS = 128  # tiny_config's max_position_embeddings


def export_bert_onnx(model, dest: Path, sequence: int = 16) -> Path:
    """A BERT-style classifier as a TorchScript-exported ONNX graph with dynamic batch/sequence.

    TorchScript (dynamo=False) is the export ORT's transformer optimiser fuses attention on.
    """
    import torch

    ids = torch.randint(5, 100, (1, sequence))
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(dest),
        input_names=INPUT_NAMES,
        output_names=["logits"],
        dynamic_axes={k: {0: "batch", 1: "sequence"} for k in INPUT_NAMES},
        opset_version=17,
        dynamo=False,
    )
    return dest


def export_tiny_bert(dest: Path, num_layers: int = 2) -> Path:
    """The conftest tiny BERT classifier as ONNX."""
    from conftest import tiny_model

    return export_bert_onnx(tiny_model("bert", "classification", num_layers), dest)


def make_artifact(folder: Path, onnx_path: Path, name: str = "tiny", variant: str = "fp32") -> Path:
    """An artifact folder as the exporter lays it out: model, config, samples, manifest."""
    from asc_deploy.deploy import artifacts

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_path.read_bytes())
    config = {"model_type": "bert", "max_position_embeddings": MAX_POSITIONS, "vocab_size": 200}
    (folder / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    features = []
    for length in (6, 9, 12, 20, 7, 15):
        ids = rng.integers(5, 100, size=length).tolist()
        features.append(
            {"input_ids": ids, "attention_mask": [1] * length, "token_type_ids": [0] * length}
        )
    artifacts.write_sample_inputs(folder, features, pad_token_id=0)
    artifacts.write_manifest(folder, {"name": name, "variant": variant})
    return folder
