"""`asc-deploy report` through the real entry point: exit codes 0 / 1 / 2 and their lines."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "results_example.json"


def _cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    from asc_deploy.cli import main

    monkeypatch.setattr(sys, "argv", ["asc-deploy", "report", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def results() -> dict:
    return json.loads(FIXTURE.read_text())


def _save(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_passing_gates_exit_zero_and_write_the_report(monkeypatch, capsys, tmp_path):
    code, out, err = _cli(monkeypatch, capsys, FIXTURE, "--output", tmp_path / "rep")
    assert code == 0, err
    assert err == ""
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {
        "report.md",
        "report.html",
        "results.json",
        "plots",
    }


def test_failing_gate_exits_one_with_its_line(monkeypatch, capsys, tmp_path, results):
    results["run"]["config"]["gates"]["max_accuracy_drop"] = 0.5
    path = _save(tmp_path / "results.json", results)
    code, _, err = _cli(monkeypatch, capsys, path, "-o", tmp_path / "rep", "--no-plots")
    assert code == 1
    assert not (tmp_path / "rep" / "plots").exists()
    assert err.splitlines() == [
        "gate max_accuracy_drop failed: asc-0.90 int8-dynamic drops 0.7 points > 0.5"
    ]


def test_bench_from_another_host_is_merged(monkeypatch, capsys, tmp_path, results):
    edge = results["bench"].pop(1)
    path = _save(tmp_path / "results.json", results)
    bench = _save(tmp_path / "edge.json", edge)
    code, out, _ = _cli(
        monkeypatch, capsys, path, "--bench", bench, "-o", tmp_path / "r", "--json", "--no-plots"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["recommendation"]["cpu"]["by_host"]["edge-box (bbbbbbbb)"]["model"] == "asc-0.85"
    assert [g["passed"] for g in doc["gates"]] == [True, True, True]
    written = json.loads((tmp_path / "r" / "results.json").read_text())
    assert len(written["bench"]) == 2


def test_baseline_regression_fails(monkeypatch, capsys, tmp_path, results):
    results["run"]["config"]["gates"]["max_latency_regression"] = 0.1
    baseline = copy.deepcopy(results)
    for doc in baseline["bench"]:
        for m in doc["measurements"]:
            m["latency_ms"]["p50"] /= 2  # everything is now twice as slow as the baseline
    path = _save(tmp_path / "results.json", results)
    base = _save(tmp_path / "baseline.json", baseline)
    code, _, err = _cli(
        monkeypatch, capsys, path, "--baseline", base, "-o", tmp_path / "r", "--no-plots"
    )
    assert code == 1
    (line,) = err.splitlines()
    assert line.startswith("gate max_latency_regression failed: ")
    assert line.endswith("(+100% > 10%)")
    code, _, err = _cli(
        monkeypatch, capsys, path, "--baseline", path, "-o", tmp_path / "r2", "--no-plots"
    )
    assert code == 0, err


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file not found"),
        ("{not json", "not valid JSON"),
        (
            '{"schema": "asc-deploy.results/2", "models": [], "evaluations": []}',
            "version 2 is unknown",
        ),
    ],
)
def test_user_errors_exit_two_in_one_line(monkeypatch, capsys, tmp_path, content, message):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    code, _, err = _cli(monkeypatch, capsys, path, "-o", tmp_path / "r")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "r").exists()
