"""The deploy verbs end to end on a tiny model, and their one-line errors on bad input."""

from __future__ import annotations

import json

import pytest
from deploy_helpers import run_cli


@pytest.fixture
def exported(tiny_model_dir, tmp_path, shared_data, monkeypatch, capsys):
    model_dir = tiny_model_dir("bert", "classification")
    dest = tmp_path / "exports" / "run" / "tiny" / "fp32"
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "export",
        str(model_dir),
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "--output",
        str(dest),
        "--validate-samples",
        "12",
        "--sample-inputs",
        "40",
        "--json",
    )
    assert code == 0, err
    return model_dir, dest, json.loads(out)


def test_export_quantize_optimize_triton(exported, shared_data, tmp_path, monkeypatch, capsys):
    _, dest, manifest = exported
    assert manifest["validation"]["examples"] == 12 and manifest["sample_inputs"] == 40
    assert manifest["task"] == {"family": "classification", "name": "sst2"}
    code, out, err = run_cli(
        monkeypatch, capsys, "quantize", str(dest), "--mode", "dynamic", "--isa", "avx2"
    )
    assert code == 0, err and "int8-dynamic" in out
    assert (dest.parent / "int8-dynamic" / "manifest.json").is_file()
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "quantize",
        str(dest),
        "--mode",
        "static",
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "--calibration-samples",
        "16",
    )
    assert code == 0, err
    static = json.loads((dest.parent / "int8-static" / "manifest.json").read_text())
    assert static["transform"]["calibration_inputs"] == 16
    code, out, err = run_cli(monkeypatch, capsys, "optimize", str(dest))
    assert code == 0, err and "fused attention nodes: 4 of 4" in out
    repo = tmp_path / "repo"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "triton",
        str(dest),
        f"q={dest.parent / 'int8-dynamic'}",
        "--output",
        str(repo),
    )
    assert code == 0, err
    assert sorted(p.name for p in repo.iterdir()) == ["bert-classification-4-fp32", "q"]


def test_not_a_model_folder(tmp_path, shared_data, monkeypatch, capsys):
    (tmp_path / "notamodel").mkdir()
    out_dir = tmp_path / "out"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "export",
        str(tmp_path / "notamodel"),
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "--output",
        str(out_dir),
    )
    assert code == 2 and err.count("\n") == 1 and "not a model folder" in err
    assert not out_dir.exists()


def test_onnx_file_that_fails_to_load(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf")
    code, _, err = run_cli(
        monkeypatch, capsys, "quantize", str(bad), "--output", str(tmp_path / "q")
    )
    assert code == 2 and err.count("\n") == 1 and "failed to load" in err
    assert not (tmp_path / "q").exists()


def test_unreadable_graph_inside_an_artifact(exported, monkeypatch, capsys):
    """A manifest that matches a graph ORT cannot load: one line, nothing written."""
    from asc_deploy.fsutil import sha256_file

    _, dest, _ = exported
    model = dest / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = {"sha256": sha256_file(model), "size": model.stat().st_size}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(monkeypatch, capsys, "quantize", str(dest))
    assert code == 2 and err.count("\n") == 1 and "failed to load" in err
    assert not (dest.parent / "int8-dynamic").exists()


def test_provider_that_does_not_exist(exported, monkeypatch, capsys):
    _, dest, _ = exported
    code, _, err = run_cli(
        monkeypatch, capsys, "quantize", str(dest), "--mode", "fp16", "--provider", "nosuch"
    )
    assert code == 2 and err.count("\n") == 1 and "unknown execution provider 'nosuch'" in err
    assert not (dest.parent / "fp16").exists()


def test_empty_calibration_set(exported, shared_data, monkeypatch, capsys):
    _, dest, _ = exported
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "quantize",
        str(dest),
        "--mode",
        "static",
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "--calibration-samples",
        "0",
    )
    assert code == 2 and err.count("\n") == 1 and "calibration set is empty" in err
    assert not (dest.parent / "int8-static").exists()


def test_bad_option_values(exported, monkeypatch, capsys):
    _, dest, _ = exported
    for args in (
        ["--mode", "int4"],
        ["--isa", "sse2"],
        ["--calibrator", "magic", "--mode", "dynamic"],
    ):
        code, _, err = run_cli(monkeypatch, capsys, "quantize", str(dest), *args)
        if "--calibrator" in args:  # only static uses the calibrator: dynamic ignores it
            continue
        assert code == 2 and err.count("\n") == 1, (args, err)
    code, _, err = run_cli(monkeypatch, capsys, "optimize", str(dest), "--target", "tpu")
    assert code == 2 and "cpu or cuda" in err
