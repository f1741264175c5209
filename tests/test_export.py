"""Export of every architecture and head, validated against PyTorch on real inputs."""

from __future__ import annotations

import numpy as np
import pytest
from deploy_helpers import export_tiny, features_for

from asc_deploy.deploy import export as export_mod
from asc_deploy.errors import UserError

ARCHS = ("bert", "roberta", "distilbert", "mpnet", "electra")


@pytest.mark.parametrize("head", ["classification", "question-answering"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_exports_and_matches_pytorch(tiny_model_dir, tmp_path, arch, head):
    model_dir, dest, manifest = export_tiny(tiny_model_dir, tmp_path, arch, head)
    v = manifest["validation"]
    assert v["passed"] and v["max_abs_diff"] <= 1e-4
    assert v["mismatched_predictions"] == 0 and v["examples"] == len(features_for(model_dir, head))
    assert len(v["lengths"]) >= 3  # several lengths, padded together in batches > 1
    outputs = [o["name"] for o in manifest["outputs"]]
    assert outputs == (["logits"] if head == "classification" else ["start_logits", "end_logits"])
    assert manifest["inputs"][0]["shape"] == ["batch_size", "sequence_length"]  # dynamic axes
    assert manifest["opset"] == 17 and manifest["encoder_layers"] == 4
    assert (dest / "model.onnx").is_file() and (dest / "tokenizer.json").is_file()


def test_onnx_runs_at_unseen_batch_and_length(tiny_model_dir, tmp_path):
    """Dynamic axes really are dynamic: a batch of 3 at length 40 matches PyTorch."""
    import torch
    from conftest import tiny_model

    from asc_deploy.measure.ort_runner import create_session

    _, dest, _ = export_tiny(tiny_model_dir, tmp_path, "bert", "classification")
    ids = np.random.default_rng(0).integers(5, 100, size=(3, 40))
    feed = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }
    got = create_session(dest / "model.onnx").run(None, feed)[0]
    with torch.inference_mode():
        ref = tiny_model("bert", "classification")(
            **{k: torch.from_numpy(v) for k, v in feed.items()}
        )
    assert np.abs(got - ref.logits.numpy()).max() <= 1e-4


def test_layer_pruned_model_exports_with_fewer_layers(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from asc_deploy.deploy.optimize import count_fused_attention, optimize_artifact
    from asc_deploy.models.surgery import remove_layers

    full_dir, _, full = export_tiny(tiny_model_dir, tmp_path, "bert", "classification")
    model = AutoModelForSequenceClassification.from_pretrained(full_dir)
    pruned_dir = tmp_path / "pruned"
    remove_layers(model, [1, 2]).save_pretrained(pruned_dir)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (pruned_dir / f).write_bytes((full_dir / f).read_bytes())
    manifest = export_mod.export_artifact(
        pruned_dir,
        tmp_path / "p" / "fp32",
        "classification",
        features_for(pruned_dir, "classification"),
    )
    assert manifest["encoder_layers"] == 2 and manifest["validation"]["max_abs_diff"] <= 1e-4
    assert manifest["parameters"] < full["parameters"]
    optimized = optimize_artifact(tmp_path / "p" / "fp32", tmp_path / "p" / "optimized")
    assert count_fused_attention(tmp_path / "p" / "optimized" / "model.onnx") == 2
    assert optimized["transform"]["unfused_attention_layers"] == 0


def test_failed_validation_raises_with_numbers_and_keeps_nothing(
    tiny_model_dir, tmp_path, monkeypatch
):
    model_dir = tiny_model_dir("bert", "classification")
    real = export_mod.torch_reference

    def off_by_a_bit(model, batches, names):
        return [{k: v + 1e-3 for k, v in out.items()} for out in real(model, batches, names)]

    monkeypatch.setattr(export_mod, "torch_reference", off_by_a_bit)
    dest = tmp_path / "out" / "fp32"
    with pytest.raises(UserError, match=r"max \|logit diff\| 0\.001.*tolerance 0\.0001"):
        export_mod.export_artifact(
            model_dir, dest, "classification", features_for(model_dir, "classification")
        )
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no half artifact, no temp


def test_rerun_reuses_and_changed_inputs_rebuild(tiny_model_dir, tmp_path):
    model_dir, dest, first = export_tiny(tiny_model_dir, tmp_path)
    feats = features_for(model_dir, "classification")
    again = export_mod.export_artifact(model_dir, dest, "classification", feats)
    assert again["reused"] and again["inputs_hash"] == first["inputs_hash"]
    changed = export_mod.export_artifact(model_dir, dest, "classification", feats[:5])
    assert not changed["reused"] and changed["inputs_hash"] != first["inputs_hash"]


def test_not_a_model_folder_and_too_few_inputs(tiny_model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a model folder"):
        export_mod.export_artifact(tmp_path / "empty", tmp_path / "o", "classification", [])
    model_dir = tiny_model_dir("bert", "classification")
    with pytest.raises(UserError, match="at least 2"):
        export_mod.export_artifact(
            model_dir,
            tmp_path / "o",
            "classification",
            features_for(model_dir, "classification")[:1],
        )
    assert not (tmp_path / "o").exists()


def test_fusion_is_counted_and_missing_fusion_warns(tiny_model_dir, tmp_path):
    from asc_deploy.deploy.optimize import FusionWarning, optimize_artifact

    _, bert, _ = export_tiny(tiny_model_dir, tmp_path, "bert")
    report = optimize_artifact(bert, bert.parent / "optimized")["transform"]
    assert report["fused_attention"] == 4 and report["fused_ops"]["SkipLayerNormalization"] == 8
    _, mpnet, _ = export_tiny(tiny_model_dir, tmp_path, "mpnet")
    with pytest.warns(FusionWarning, match="4 layer\\(s\\) unfused"):
        report = optimize_artifact(mpnet, mpnet.parent / "optimized")["transform"]
    assert report["fused_attention"] == 0 and report["unfused_attention_layers"] == 4


def test_ort_evaluation_matches_pytorch_predictions(tiny_model_dir, tmp_path, shared_data):
    """Same task pipeline, two runtimes: identical per-example predictions on SST-2 dev."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from asc_deploy.config import TaskConfig
    from asc_deploy.deploy.ort_evaluate import evaluate_onnx
    from asc_deploy.tasks.evaluation import evaluate_torch
    from asc_deploy.tasks.presets import build_task

    task = build_task(TaskConfig(preset="sst2", data_dir=shared_data))
    model_dir = tiny_model_dir("bert", "classification")
    tok = AutoTokenizer.from_pretrained(model_dir)
    feats = task.encode(tok, task.load_examples("eval", 16))
    dest = tmp_path / "sst2" / "fp32"
    export_mod.export_artifact(model_dir, dest, "classification", feats)
    onnx_result = evaluate_onnx(dest, task, max_samples=64, batch_size=16, progress=False)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    torch_result = evaluate_torch(
        model, tok, task, max_samples=64, batch_size=16, with_cls=False, progress=False
    )
    assert onnx_result.num_examples == 64
    assert [p["prediction"] for p in onnx_result.predictions] == [
        p["prediction"] for p in torch_result.predictions
    ]
    assert onnx_result.metrics == pytest.approx(torch_result.metrics)
    assert onnx_result.info["runtime"] == "onnxruntime" and onnx_result.info["variant"] == "fp32"
