"""`asc-deploy report` through the real entry point: exit codes 0 / 1 / 2 and their lines.

The results.json is the one the tiny end-to-end run wrote (tests/pipeline_helpers.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pipeline_helpers import without_stored_bounds

from asc_deploy.measure import harness
from asc_deploy.records import Results, host_label, load_results


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
def results(run_results_file) -> Results:
    return load_results(run_results_file)


def _save(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _on_edge(doc: dict) -> dict:
    """A bench.json document as if measured on another host."""
    host = {**doc["host"], "fingerprint": "e" * 16, "hostname": "edge-box"}
    return {**doc, "host": host}


def test_passing_gates_exit_zero_and_write_the_report(
    monkeypatch, capsys, tmp_path, run_results_file
):
    code, out, err = _cli(monkeypatch, capsys, run_results_file, "--output", tmp_path / "rep")
    assert code == 0, err
    assert err == ""
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {
        "report.md",
        "report.html",
        "results.json",
        "plots",
    }
    # What the run's stages cost, from the records the real run wrote.
    compute = json.loads(run_results_file.read_text())["run"]["compute"]
    table = (tmp_path / "rep" / "report.md").read_text().split("### Compute time by stage")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    rows = {row[0]: row for row in rows if len(row) == 4 and row[0] not in ("Stage", "---")}
    assert set(rows) == {*compute, "total"}
    assert all(rows[stage][1] == str(spent["records"]) for stage, spent in compute.items())
    assert rows["total"][1] == str(sum(t["records"] for t in compute.values()))


def test_failing_gate_exits_one_with_its_line(monkeypatch, capsys, tmp_path, results):
    doc = results.dump()
    doc["run"]["config"]["gates"]["max_size_mb"] = 0.01
    path = _save(tmp_path / "results.json", doc)
    code, _, err = _cli(monkeypatch, capsys, path, "-o", tmp_path / "rep", "--no-plots")
    assert code == 1
    assert not (tmp_path / "rep" / "plots").exists()
    pick = load_results(tmp_path / "rep" / "results.json").recommendation["cpu"]
    size = results.evaluation(pick.model, pick.variant).size_bytes / 1e6
    assert err.splitlines() == [
        f"gate max_size_mb failed: {pick.model} {pick.variant} is {size:.1f} MB > 0.01 MB"
    ]


@pytest.mark.parametrize("merged", [False, True], ids=["bench.json", "bench-merge set"])
def test_bench_from_another_host_is_merged(monkeypatch, capsys, tmp_path, results, merged):
    edge = _on_edge(results.bench[0].dump())
    bench = _save(tmp_path / "edge.json", harness.merge_bench([edge]) if merged else edge)
    path = _save(tmp_path / "results.json", results.dump())
    code, out, _ = _cli(
        monkeypatch, capsys, path, "--bench", bench, "-o", tmp_path / "r", "--json", "--no-plots"
    )
    assert code == 0
    doc = json.loads(out)
    own = doc["recommendation"]["cpu"]
    edge_pick = own["by_host"]["edge-box (eeeeeeee)"]
    assert (edge_pick["model"], edge_pick["variant"]) == (own["model"], own["variant"])
    assert [g["passed"] for g in doc["gates"]] == [True]
    assert doc["report"]["report.html"] == str(tmp_path / "r" / "report.html")
    assert len(load_results(tmp_path / "r" / "results.json").bench) == 2


def test_baseline_regression_fails(monkeypatch, capsys, tmp_path, results):
    doc = results.dump()
    doc["run"]["config"]["gates"]["max_latency_regression"] = 0.1
    baseline = json.loads(json.dumps(doc))
    for m in baseline["bench"][0]["measurements"]:
        m["latency_ms"]["p50"] /= 2  # everything is now twice as slow as the baseline
    path = _save(tmp_path / "results.json", doc)
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


def test_a_results_json_from_before_the_bound_is_reported_and_says_what_is_missing(
    monkeypatch, capsys, tmp_path, results
):
    """Written before comparisons stored the one-sided bound (and gates had `decision`): it
    loads, only the uncompressed model is shown within the budget, and the report names the
    missing field, the point rule's pick and the two ways to decide it."""
    doc = without_stored_bounds(results.dump())
    path = _save(tmp_path / "results.json", doc)
    code, _, err = _cli(monkeypatch, capsys, path, "-o", tmp_path / "rep", "--no-plots")
    assert code == 0, err  # the gate checks the recommendation: the uncompressed model
    written = load_results(tmp_path / "rep" / "results.json")
    pick = written.recommendation["cpu"]
    assert (pick.model, pick.variant) == ("uncompressed", "torch")
    md = (tmp_path / "rep" / "report.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("- cpu: ")]
    assert lines[0] == (
        "- cpu: no faster artifact is shown within 1 point of the uncompressed model at "
        "one-sided 95%, so uncompressed torch stays the recommendation"
    )
    assert lines[1].startswith("- cpu: the point rule would pick ")
    assert lines[1].endswith(
        "but it cannot be shown within 1 point: no one-sided 95% lower bound stored for accuracy "
        "(comparison field ni_low; this results.json predates it): re-run `asc-deploy run` on "
        "its config (stages are reused, comparisons recomputed), or set gates.decision: point"
    )
    assert "- Power: not computed: the comparison of " in md


def test_an_unknown_decision_in_results_json_is_one_error_line(
    monkeypatch, capsys, tmp_path, results
):
    doc = results.dump()
    doc["run"]["config"]["gates"]["decision"] = "bayes"
    path = _save(tmp_path / "results.json", doc)
    code, _, err = _cli(monkeypatch, capsys, path, "-o", tmp_path / "rep", "--no-plots")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and "run.config.gates.decision" in err


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


@pytest.mark.parametrize("accuracy", ["high", "50.0", float("nan")])
def test_a_non_numeric_accuracy_exits_two(monkeypatch, capsys, tmp_path, results, accuracy):
    doc = results.dump()
    doc["evaluations"][0]["primary"] = accuracy
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))  # NaN is written as the bare token NaN
    code, _, err = _cli(monkeypatch, capsys, path, "-o", tmp_path / "r")
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "evaluations.0.primary" in err
    assert not (tmp_path / "r").exists()


def test_an_edited_delta_is_recomputed(monkeypatch, capsys, tmp_path, results):
    doc = results.dump()
    ev = next(e for e in doc["evaluations"] if (e["model"], e["variant"]) == ("asc-0.90", "fp32"))
    stored = ev["delta"]
    ev["delta"] = 99.0  # a delta is never believed: it is recomputed from the metrics
    path = _save(tmp_path / "results.json", doc)
    code, _, err = _cli(monkeypatch, capsys, path, "-o", tmp_path / "r", "--no-plots")
    assert code == 0, err
    written = load_results(tmp_path / "r" / "results.json")
    assert written.evaluation("asc-0.90", "fp32").delta == pytest.approx(stored, abs=1e-3)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["measurements"][0].pop("latency_ms"), "measurements.0.latency_ms"),
        (lambda d: d["measurements"][0].update(batch=0), "measurements.0.batch"),
        (lambda d: d.update(schema="asc-deploy.bench/9"), "version 9 is unknown"),
    ],
    ids=["missing latency", "batch 0", "unknown version"],
)
def test_a_malformed_bench_file_exits_two(
    monkeypatch, capsys, tmp_path, run_results_file, results, change, message
):
    bench = results.bench[0].dump()
    change(bench)
    path = _save(tmp_path / "bench.json", bench)
    code, _, err = _cli(
        monkeypatch, capsys, run_results_file, "--bench", path, "-o", tmp_path / "r"
    )
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_serving_scenarios_measured_on_the_run_s_artifacts_are_reported(
    monkeypatch, capsys, tmp_path, run_results_file, results
):
    """`bench --scenario` on two of the run's artifacts, then `report --bench` shows them."""
    from pipeline_helpers import cli

    artifacts = [results.evaluation(m, "fp32").artifact for m in ("uncompressed", "asc-0.20")]
    bench = tmp_path / "served.json"
    scenarios = ["--scenario", "SingleStream", "--scenario", "Server", "--scenario", "Offline"]
    server = ["--target-qps", "100", "--latency-bound-ms", "500", "--min-queries", "500"]
    fast = ["--threads", "1", "--warmup", "1", "--scenario-seconds", "0.3"]
    served = cli("bench", *artifacts, *scenarios, *server, *fast, "-o", str(bench))
    assert served.returncode == 0, served.stderr[-2000:]
    records = json.loads(bench.read_text())["scenarios"]
    code, _, err = _cli(
        monkeypatch, capsys, run_results_file, "--bench", bench, "-o", tmp_path / "r"
    )
    assert code == 0, err
    md = (tmp_path / "r" / "report.md").read_text()
    label = host_label(results.bench[0].host)
    # The run's own Server records come first; the merged bench file's table is the last one.
    title = f"### Serving scenarios (MLPerf LoadGen) on {label}, cpu"
    assert md.count(title) == 2
    table = md.split(title)[-1].split("###")[0]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    rows = {row[0]: row for row in cells if len(row) == 8 and row[1] == "fp32"}
    assert rows["uncompressed"][3] == rows["uncompressed"][7] == "1.00x"
    value = {(r["model"], r["scenario"]): r["value"] for r in records}
    ratio = value[("asc-0.20", "SingleStream")] / value[("uncompressed", "SingleStream")]
    assert rows["asc-0.20"][3] == f"{round(ratio, 4):.2f}x"
    assert "Ratios against uncompressed fp32" in table
    # SingleStream next to the harness loop that ran around it, for both artifacts.
    check = md.split(f"### SingleStream vs the harness on {label}, cpu")[-1].split("###")[0]
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in check.splitlines()]
    served_rows = {row[0]: row for row in lines if len(row) == 8 and row[1] == "fp32"}
    assert set(served_rows) == {"uncompressed", "asc-0.20"}
    singles = {r["model"]: r for r in records if r["scenario"] == "SingleStream"}
    for model, row in served_rows.items():
        agreement = singles[model]["harness_check"]
        assert row[7].strip("*") == {True: "yes", False: "no"}[agreement["within_noise"]]
        assert row[5] == f"{100 * agreement['difference_vs_loops']:+.1f}%"
    png = tmp_path / "r" / "plots" / "server-p99-0-cpu.png"
    assert png.read_bytes().startswith(b"\x89PNG")


def test_an_inconclusive_gate_exits_three_with_its_line(monkeypatch, capsys, tmp_path, results):
    doc = results.dump()
    doc["run"]["config"]["gates"]["min_speedup"] = 1e-6
    # The bare session.run loop spread 42% during the bench: a busy host decides nothing.
    doc["bench"][0]["noise"] = {"floor": 0.42, "threshold": 0.84, "host_busy": True}
    path = _save(tmp_path / "results.json", doc)
    code, _, err = _cli(monkeypatch, capsys, path, "-o", tmp_path / "rep", "--no-plots")
    assert code == 3
    (line,) = err.splitlines()
    assert line.startswith("gate min_speedup inconclusive: ") and "re-run the bench" in line
    assert "Verdict: INCONCLUSIVE (1 of" in (tmp_path / "rep" / "report.md").read_text()
