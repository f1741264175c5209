"""`asc-deploy bench` / `bench-merge` end to end, in subprocesses with torch/transformers blocked.

The block proves the target-host promise: the bench path runs where only onnxruntime exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench_models import MAX_POSITIONS, export_tiny_bert, make_artifact

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "--threads",
    "1",
    "--warmup",
    "1",
    "--min-iterations",
    "3",
    "--min-seconds",
    "0",
    "--rounds",
    "2",
]


@pytest.fixture(scope="module")
def blocker(tmp_path_factory) -> Path:
    """A sitecustomize that makes `import torch` / `import transformers` fail in the child."""
    folder = tmp_path_factory.mktemp("block")
    (folder / "sitecustomize.py").write_text(
        "import sys\nfor name in ('torch', 'transformers'):\n    sys.modules[name] = None\n"
    )
    return folder


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return export_tiny_bert(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture
def artifact(tmp_path, tiny_onnx):
    return make_artifact(tmp_path / "run" / "tiny" / "fp32", tiny_onnx)


def cli(blocker: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])}
    code = "from asc_deploy.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def test_blocker_really_blocks(blocker):
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    proc = subprocess.run(
        [sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env
    )
    assert proc.returncode != 0 and "torch" in proc.stderr


def test_bench_runs_without_torch_and_writes_json(blocker, artifact, tiny_onnx, tmp_path):
    out = tmp_path / "bench.json"
    proc = cli(
        blocker,
        "bench",
        str(artifact),
        str(tiny_onnx),
        "--batch",
        "1",
        "--batch",
        "2",
        "--seq",
        "8",
        *FAST,
        "--output",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert json.loads(proc.stdout) == doc
    assert doc["host"]["versions"]["onnxruntime"]
    cells = [(m["variant"], m["batch"], m["verified"]) for m in doc["measurements"]]
    assert cells == [("fp32", 1, True), ("fp32", 2, True), ("tiny", 1, False), ("tiny", 2, False)]
    assert all(m["iterations"] >= 6 and m["latency_ms"]["p50"] > 0 for m in doc["measurements"])
    merged = tmp_path / "merged.json"
    proc = cli(blocker, "bench-merge", str(out), str(out), "--output", str(merged))
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(merged.read_text())["runs"]) == 1


def _damage(artifact: Path) -> None:
    model = artifact / "model.onnx"
    model.write_bytes(model.read_bytes()[:-10])


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "not found"),
        ("truncated", "truncated or replaced"),
        ("provider", "execution provider 'cuda' is not available"),
        ("too-long", f"{MAX_POSITIONS} positions"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_keeps_old_results(
    blocker, artifact, tmp_path, case, expected
):
    out = tmp_path / "bench.json"
    out.write_text('{"earlier": "results"}\n')
    target, extra = str(artifact), ["--seq", "8"]
    if case == "missing":
        target = str(tmp_path / "no-such-artifact")
    elif case == "truncated":
        _damage(artifact)
    elif case == "provider":
        extra += ["--provider", "cuda"]
    elif case == "too-long":
        extra = ["--seq", str(MAX_POSITIONS + 1)]
    proc = cli(blocker, "bench", target, "--batch", "1", *extra, *FAST, "--output", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr
    assert out.read_text() == '{"earlier": "results"}\n'


def test_config_bench_section_sets_defaults_and_options_override(blocker, tiny_onnx, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: some-model\ntask: {preset: sst2}\n"
        "bench: {batch_sizes: [3], sequence_lengths: [8, 12], rounds: 1, warmup: 0,\n"
        "        min_iterations: 2, min_seconds: 0, intra_op_threads: 1}\n"
    )
    out = tmp_path / "bench.json"
    proc = cli(
        blocker, "bench", str(tiny_onnx), "--config", str(config), "--seq", "4", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert [(m["batch"], m["sequence"]) for m in doc["measurements"]] == [(3, 4)]
    assert doc["settings"]["rounds"] == 1 and doc["settings"]["min_iterations"] == 2
    assert any("one round only" in f for f in doc["flags"])
