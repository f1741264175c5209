"""Artifact folders: manifest contents, sample inputs, tamper detection, atomicity, reuse."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from deploy_helpers import export_tiny, features_for

from asc_deploy.deploy import artifacts, variants
from asc_deploy.deploy.export import export_artifact
from asc_deploy.deploy.quantize import quantize_artifact
from asc_deploy.errors import UserError
from asc_deploy.fsutil import sha256_file
from asc_deploy.manifest import verify_artifact


def test_manifest_describes_files_graph_source_and_versions(tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir("bert", "question-answering", 3)
    (model_dir / "pruning.json").write_text(json.dumps({"removed_layers": [2], "threshold": 0.9}))
    (model_dir / "finetune.json").write_text(json.dumps({"steps": 10}))
    dest = tmp_path / "exports" / "run" / "m" / "fp32"
    m = export_artifact(model_dir, dest, "question-answering", features_for(model_dir, "qa"))
    on_disk = json.loads((dest / "manifest.json").read_text())
    assert (
        on_disk["schema"] == "asc-deploy.artifact/1" and on_disk["inputs_hash"] == m["inputs_hash"]
    )
    for name in ("model.onnx", "tokenizer.json", "config.json", "sample_inputs.npz"):
        record = on_disk["files"][name]
        assert record == {"sha256": sha256_file(dest / name), "size": (dest / name).stat().st_size}
    assert on_disk["source"]["pruning"] == {"removed_layers": [2], "threshold": 0.9}
    assert on_disk["source"]["finetune"] == {"steps": 10}
    assert on_disk["encoder_layers"] == 3 and on_disk["opset"] == 17
    assert [i["name"] for i in on_disk["inputs"]] == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
    ]
    assert all(i["dtype"] == "int64" for i in on_disk["inputs"])
    assert on_disk["outputs"][0] == {
        "name": "start_logits",
        "shape": ["batch_size", "sequence_length"],
        "dtype": "float32",
    }
    assert on_disk["versions"]["onnxruntime"] and on_disk["versions"]["transformers"]
    assert 0 < on_disk["parameters"] < 200_000 and on_disk["validation"]["passed"]


def test_sample_inputs_hold_real_padded_rows_with_lengths(tiny_model_dir, tmp_path):
    model_dir, dest, _ = export_tiny(tiny_model_dir, tmp_path)
    feats = features_for(model_dir, "classification")
    samples = artifacts.load_sample_inputs(dest)
    assert samples["lengths"].tolist() == [len(f["input_ids"]) for f in feats]
    assert samples["input_ids"].shape == (len(feats), max(samples["lengths"]))
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        assert samples["input_ids"][i, :n].tolist() == f["input_ids"]
        assert samples["attention_mask"][i].sum() == n
    batches = artifacts.sample_batches(samples, batch_size=4)
    assert [len(b["lengths"]) for b in batches] == [4, 4, 2]
    assert batches[0]["input_ids"].shape[1] == max(samples["lengths"][:4])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "bytes, manifest says"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])), "sha256"),
        (lambda p: p.unlink(), "missing"),
    ],
    ids=["truncated", "altered", "deleted"],
)
def test_verify_detects_tampering(tiny_model_dir, tmp_path, damage, message):
    _, dest, _ = export_tiny(tiny_model_dir, tmp_path)
    assert verify_artifact(dest)["variant"] == "fp32"
    damage(dest / "model.onnx")
    with pytest.raises(UserError, match=message):
        verify_artifact(dest)


def test_verify_rejects_non_artifacts(tmp_path):
    with pytest.raises(UserError, match="not found"):
        verify_artifact(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="no manifest.json"):
        verify_artifact(tmp_path / "plain")


def test_tampered_artifact_is_rebuilt_not_reused(tiny_model_dir, tmp_path):
    model_dir, dest, first = export_tiny(tiny_model_dir, tmp_path)
    (dest / "vocab.txt").write_text("tampered\n")
    again = export_artifact(
        model_dir, dest, "classification", features_for(model_dir, "classification")
    )
    assert not again["reused"]
    verify_artifact(dest)


def test_failing_variant_leaves_nothing_behind(tiny_model_dir, tmp_path):
    _, dest, _ = export_tiny(tiny_model_dir, tmp_path)
    target = dest.parent / "broken"

    def transform(src, dst):
        dst.write_bytes(b"half a graph")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        variants.derive_variant(dest, target, "int8-dynamic", {}, transform)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["fp32"]


def test_variant_is_reused_when_inputs_match(tiny_model_dir, tmp_path):
    _, dest, _ = export_tiny(tiny_model_dir, tmp_path)
    first = quantize_artifact(dest, dest.parent / "q", "dynamic", isa="avx2")
    again = quantize_artifact(dest, dest.parent / "q", "dynamic", isa="avx2")
    assert again["reused"] and again["files"] == first["files"]
    other = quantize_artifact(dest, dest.parent / "q", "dynamic", isa="avx512_vnni")
    assert not other["reused"] and other["settings"]["isa"] == "avx512_vnni"


def test_torch_free_modules_import_without_torch():
    code = (
        "import sys; import asc_deploy.deploy.artifacts, asc_deploy.deploy.triton, "
        "asc_deploy.deploy.validation, asc_deploy.deploy.variants; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sample_inputs_feed_the_graph(tiny_model_dir, tmp_path):
    """A host with only onnxruntime can run the saved real inputs directly."""
    from asc_deploy.measure.ort_runner import create_session

    _, dest, _ = export_tiny(tiny_model_dir, tmp_path)
    session = create_session(dest / "model.onnx")
    for batch in artifacts.sample_batches(artifacts.load_sample_inputs(dest), batch_size=5):
        (logits,) = session.run(
            None, {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        )
        assert logits.shape == (len(batch["lengths"]), 2) and np.isfinite(logits).all()
