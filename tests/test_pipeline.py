"""`asc-deploy run` end to end on a tiny model: results, report, resume after a kill, gates.

The run itself is the session fixture `full_run` (tests/pipeline_helpers.py), shared with the
report tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from pipeline_helpers import cli as _cli
from pipeline_helpers import run_config as _config

pytestmark = pytest.mark.slow


def test_results_cover_every_model_and_stage(full_run):
    root, results = full_run
    assert results["schema"] == "asc-deploy.results/1"
    from asc_deploy.compress.asc import select_redundant_layers

    selections = results["similarity"]["selections"]
    assert selections["0.9"] == [2]  # the identity layer, and only it
    assert selections["0.2"] == select_redundant_layers(results["similarity"]["matrix"], 0.2)
    count = len(selections["0.2"])
    names = {m["name"]: m for m in results["models"]}
    expected = {"uncompressed", "asc-0.90", "asc-0.20", "top-1", f"top-{count}", "random-1-s1"}
    assert expected <= set(names)
    assert names["asc-0.90"]["layers"] == 3 and names["asc-0.90"]["removed_layers"] == [2]
    assert names["top-1"]["removed_layers"] == [4]
    assert (
        names["tiny-distilbert"]["kind"] == "off-the-shelf"
        and names["tiny-distilbert"]["layers"] == 2
    )
    variants = {(e["model"], e["variant"]) for e in results["evaluations"]}
    # random seed 1 draws layer 2, asc-0.90's: a twin, recovered and measured once, under asc-0.90
    twin = names["random-1-s1"]
    assert twin["removed_layers"] == [2] and twin["same_as"] == "asc-0.90"
    assert twin["path"] == names["asc-0.90"]["path"]
    assert not any(model == "random-1-s1" for model, _ in variants)
    assert not (root / "artifacts" / "random-1-s1").exists()
    for model in ("uncompressed", "asc-0.90", "asc-0.20", "tiny-distilbert"):
        assert {(model, "torch"), (model, "fp32")} <= variants
    # The quantised baselines of the uncompressed model: PyTorch and ONNX Runtime dynamic int8.
    assert {("uncompressed", "torch-dynamic-int8"), ("uncompressed", "int8-dynamic")} <= variants
    assert ("asc-0.90", "int8-dynamic") not in variants
    by_key = {(e["model"], e["variant"]): e for e in results["evaluations"]}
    # The fp32 ONNX artifact predicts exactly what its PyTorch model predicts.
    assert by_key[("asc-0.90", "fp32")]["fidelity"]["agreement"] == 1.0 or (
        by_key[("asc-0.90", "fp32")]["primary"] == by_key[("asc-0.90", "torch")]["primary"]
    )
    assert by_key[("uncompressed", "torch")]["fidelity"]["agreement"] == 1.0
    measured = {(m["model"], m["variant"]) for m in results["bench"][0]["measurements"]}
    assert ("asc-0.90", "fp32") in measured and ("uncompressed", "torch") in measured
    assert ("uncompressed", "int8-dynamic") in measured
    for name in ("report.md", "report.html", "results.json"):
        assert (root / "report" / name).is_file()
    assert (root / "similarity" / "similarity.png").is_file()
    assert (root / "artifacts" / "asc-0.90" / "fp32" / "model.onnx").is_file()


def test_width_axis_is_built_measured_and_reported(full_run):
    """The width target combined with depth 0 and each 1-layer-removed model: narrowed folders
    with their records, recovered, evaluated, exported, benched and in the depth x width table."""
    from asc_deploy.models.loading import load_config

    root, results = full_run
    names = {m["name"]: m for m in results["models"]}
    alone, on_asc = names["apc-h16-f32"], names["asc-0.90+apc-h16-f32"]
    assert alone["kind"] == on_asc["kind"] == names["top-1+apc-h16-f32"]["kind"] == "width"
    assert alone["width"]["shape"] == {"hidden": 16, "ffn": 32, "heads": 2}
    assert alone["width"]["before"] == {"hidden": 32, "ffn": 64, "heads": 2}
    assert (alone["layers"], alone["width"]["narrows"]) == (4, "uncompressed")
    assert (on_asc["layers"], on_asc["removed_layers"]) == (3, [2])
    assert on_asc["width"]["narrows"] == "asc-0.90" and on_asc["width"]["steps"] == 0
    assert on_asc["parameters"] < names["asc-0.90"]["parameters"]
    narrowed = root / "models" / "narrowed" / "2+apc-h16-f32"
    assert (narrowed / "width.json").is_file() and (narrowed / "pruning.json").is_file()
    recovered = load_config(on_asc["path"])
    assert (recovered.hidden_size, recovered.num_hidden_layers) == (16, 3)
    variants = {(e["model"], e["variant"]) for e in results["evaluations"]}
    measured = {(m["model"], m["variant"]) for m in results["bench"][0]["measurements"]}
    for name in ("apc-h16-f32", "asc-0.90+apc-h16-f32", "top-1+apc-h16-f32"):
        assert {(name, "torch"), (name, "fp32")} <= variants
        assert (name, "fp32") in measured
    report = (root / "report" / "report.md").read_text()
    table = report[report.index("### Depth x width") :].split("\n\n")[1]
    rows = {line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]}
    assert rows == {
        "uncompressed", "asc-0.90", "top-1", "apc-h16-f32", "asc-0.90+apc-h16-f32",
        "top-1+apc-h16-f32",
    }  # fmt: skip
    assert "| asc-0.90+apc-h16-f32 | 3 | 16 | 32 | 2 |" in table


def test_rerun_with_same_inputs_reuses_every_stage(full_run, pipeline_workspace):
    root, results = full_run
    again = _cli("run", str(pipeline_workspace / "full.yaml"))
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = json.loads((root / "report" / "results.json").read_text())
    assert rerun["bench"] == results["bench"]  # not measured again
    assert rerun["evaluations"] == results["evaluations"]
    # Every stage was reused: nothing fine-tuned, exported or measured again.
    assert "[stage] bench" not in again.stderr and "[stage] evaluate" not in again.stderr
    # The compute time is the records', not this (instant) invocation's: it adds up the same.
    records = [json.loads(p.read_text()) for p in (root / "stages").glob("*.json")]
    assert rerun["run"]["compute"] == results["run"]["compute"]
    for stage, spent in results["run"]["compute"].items():
        mine = [r for r in records if r["stage"] == stage]
        assert spent["records"] == len(mine) and spent["untimed"] == 0
        assert spent["seconds"] == pytest.approx(sum(r["seconds"] for r in mine), abs=0.05)
    total = sum(t["seconds"] for t in results["run"]["compute"].values())
    assert rerun["run"]["duration_s"] < total <= results["run"]["duration_s"] + 1


def test_gates_fail_with_one_line_each_and_exit_1(full_run, pipeline_workspace):
    root, _ = full_run
    # load_limit: the tiny bare loop (0.01 s a round) is too short to tell load by: nothing
    # here may count as loaded, or a busy test host would make the verdict inconclusive.
    config = _config(
        pipeline_workspace, "full", max_accuracy_drop=100.0, min_speedup=1e6, load_limit=1e6
    )
    result = _cli("run", str(config))
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if line.startswith("gate ")]
    assert len(failures) == 1 and "min_speedup" in failures[0]
    # The speed gate's pair was timed back to back, and its bounds (not the bench's pooled
    # p50s) decided: a million-fold limit fails at the first look.
    doc = json.loads((root / "report" / "results.json").read_text())
    (trial,) = doc["speed_trials"]
    pick = doc["recommendation"]["cpu"]
    assert (trial["model"], trial["variant"]) == (pick["model"], pick["variant"])
    assert len(trial["rounds"]) == trial["looks"][0] == 7 and trial["limit"] == 1e6
    assert trial["quiet_bare_ms"] > 0 and all(r["bare_ms"] > 0 for r in trial["rounds"])
    (gate,) = [g for g in doc["gates"] if g["name"] == "min_speedup"]
    assert "timed back to back with uncompressed torch in 7 rounds" in gate["reason"]
    assert gate["reason"].endswith("upper bound < 1e+06x") and not gate["inconclusive"]


def test_interrupted_run_resumes_to_the_same_results(full_run, pipeline_workspace):
    _, full = full_run
    # Same inputs under another run name: copy nothing, kill mid-way, then resume.
    config = _config(pipeline_workspace, "resumed", max_accuracy_drop=100.0)
    root = pipeline_workspace / "exports" / "resumed"
    env = {**os.environ, "ASC_QUIET": "1"}
    command = [sys.executable, "-c", "from asc_deploy.cli import main; main()", "run", str(config)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    marker = root / "stages" / "profile.json"
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists() and not (root / "report" / "results.json").exists()
    result = _cli("run", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = json.loads((root / "report" / "results.json").read_text())
    strip = lambda evs: sorted((e["model"], e["variant"], json.dumps(e["metrics"])) for e in evs)  # noqa: E731
    assert strip(resumed["evaluations"]) == strip(full["evaluations"])
    assert resumed["similarity"]["matrix"] == full["similarity"]["matrix"]
    shutil.rmtree(root)


def test_config_error_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\ntask: {preset: sst2}\nasc: {thresholds: [1.5]}\n")
    result = _cli("run", str(bad))
    assert result.returncode == 2
    assert "asc.thresholds" in result.stderr and "outside (0, 1]" in result.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text("model: x\ntask: {preset: sst2}\nbench: {batchsizes: [1]}\n")
    result = _cli("run", str(typo))
    assert result.returncode == 2 and "bench.batchsizes" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
