"""Serving scenarios with MLPerf LoadGen: summary parsing, the QPS search, the batcher, records,
ratios, the gate, the plot, and LoadGen run for real on a tiny artifact (short durations)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from bench_models import export_tiny_bert, make_artifact

from asc_deploy.config import ScenarioConfig
from asc_deploy.errors import UserError
from asc_deploy.measure import harness, loadgen_sut, scenarios
from asc_deploy.report import scenarios as report

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--threads", "1", "--warmup", "1", "--scenario-seconds", "0.3"]

SERVER_INVALID_SUMMARY = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : Server
Mode     : PerformanceOnly
Completed samples per second    : 90.15
Result is : INVALID
  Performance constraints satisfied : Yes
  Min duration satisfied : Yes
  Min queries satisfied : Yes
  Early stopping satisfied: NO
Recommendations:
Early Stopping Result:
 * Run unsuccessful.
 * Processed 93 queries.

================================================
Additional Stats
================================================
Scheduled samples per second : 90.37
Min latency (ns)                : 2177361
Mean latency (ns)               : 2372522
99.00 percentile latency (ns)   : 3086895

================================================
Test Parameters Used
================================================
samples_per_query : 1
target_qps : 100
target_latency (ns): 20000000
"""

SINGLE_STREAM_SUMMARY = """================================================
MLPerf Results Summary
================================================
Scenario : SingleStream
90.0th percentile latency (ns) : 2314673
Result is : VALID
  Min duration satisfied : Yes
Early Stopping Result:
 * Processed at least 64 queries (437).
 * Early stopping 90.0th percentile estimate: 2339086

================================================
Additional Stats
================================================
QPS w/o loadgen overhead        : 443.34
"""

OFFLINE_SHORT_SUMMARY = """Scenario : Offline
Samples per second: 475.703
Result is : INVALID
  Min duration satisfied : NO
Recommendations:
 * Increase expected QPS so the loadgen pre-generates a larger (coalesced) query.
"""


# ---------------------------------------------------------------- summary log


def test_summary_parsing_reads_verdict_numbers_settings_and_recommendations():
    parsed = loadgen_sut.parse_summary(SERVER_INVALID_SUMMARY)
    assert parsed["result"] == "INVALID"
    assert parsed["fields"]["Completed samples per second"] == 90.15
    assert parsed["fields"]["99.00 percentile latency (ns)"] == 3086895
    assert parsed["fields"]["Early stopping satisfied"] == "NO"
    assert parsed["settings"] == {
        "samples_per_query": 1,
        "target_qps": 100,
        "target_latency (ns)": 20000000,
    }
    assert parsed["recommendations"] == []
    assert scenarios.invalid_reasons(parsed) == ["Early stopping satisfied: NO"]
    assert scenarios.metric_value("Server", parsed) is None  # INVALID is never a number

    single = loadgen_sut.parse_summary(SINGLE_STREAM_SUMMARY)
    assert single["early_stopping_estimate_ms"] == {"p90": 2.339086}
    assert scenarios.metric_value("SingleStream", single) == 2.3147

    offline = loadgen_sut.parse_summary(OFFLINE_SHORT_SUMMARY)
    assert offline["fields"]["Samples per second"] == 475.703
    assert scenarios.invalid_reasons(offline) == [
        "Min duration satisfied: NO",
        "Increase expected QPS so the loadgen pre-generates a larger (coalesced) query.",
    ]


# ---------------------------------------------------------------- the QPS search


def _capacity(limit: float, seen: list[float]):
    def run_at(qps: float) -> bool:
        seen.append(qps)
        return qps <= limit

    return run_at


def test_search_doubles_then_bisects_to_the_highest_valid_rate():
    seen: list[float] = []
    tried, stopped = scenarios.search_qps(_capacity(123.0, seen), 20, 1, 10000, 0.05, 20)
    assert tried == seen
    assert tried[:4] == [20, 40, 80, 160]  # doubling until the first INVALID
    assert stopped == "converged"
    best = max(q for q in tried if q <= 123)
    worst = min(q for q in tried if q > 123)
    assert best <= 123 < worst and (worst - best) / best <= 0.05


def test_search_halves_when_the_start_is_invalid_and_reports_limits():
    tried, stopped = scenarios.search_qps(_capacity(30.0, []), 200, 1, 10000, 0.05, 20)
    assert tried[:4] == [200, 100, 50, 25]
    assert stopped == "converged"

    tried, stopped = scenarios.search_qps(_capacity(0.5, []), 4, 1, 10000, 0.05, 20)
    assert tried == [4, 2, 1] and stopped.startswith("INVALID down to server_min_qps")

    tried, stopped = scenarios.search_qps(_capacity(1e9, []), 3000, 1, 5000, 0.05, 20)
    assert tried == [3000, 5000] and stopped.startswith("VALID at server_max_qps")

    tried, stopped = scenarios.search_qps(_capacity(123.0, []), 20, 1, 10000, 0.05, 3)
    assert tried == [20, 40, 80] and stopped == "run limit reached"


def _fake_summary(result: str, **fields) -> dict:
    fields = {"Result is": result, "99.00 percentile latency (ns)": 4_000_000, **fields}
    return {"result": result, "fields": fields, "settings": {}, "recommendations": []}


def _fake_worker(capacity_qps: float, specs: list[dict]):
    """Stands in for the LoadGen worker: a SUT that keeps p99 within the bound up to a rate."""

    def run(spec: dict, timeout_s: float) -> dict:
        specs.append(spec)
        if spec["scenario"] == "SingleStream":
            summary = _fake_summary("INVALID", **{"QPS w/o loadgen overhead": 100.0})
        elif spec["scenario"] == "Server":
            ok = spec["target_qps"] <= capacity_qps
            summary = _fake_summary(
                "VALID" if ok else "INVALID",
                **{"Scheduled samples per second": spec["target_qps"]},
                **({} if ok else {"Performance constraints satisfied": "NO"}),
            )
        else:  # Offline: the first query is sized too small, the second is long enough
            short = spec["expected_qps"] < 400
            summary = _fake_summary(
                "INVALID" if short else "VALID",
                **{"Samples per second": 300.0, "Min duration satisfied": "NO" if short else "Yes"},
            )
        batches = {"count": 1, "mean_size": 1.0, "max_size": 1, "mean_padded_length": 5.0}
        return {
            "ok": True,
            "summary": summary,
            "batches": batches,
            "providers": ["CPUExecutionProvider"],
            "queries": 4,
            "mean_length": 4.0,
        }

    return run


def test_server_and_offline_are_sized_from_a_single_stream_probe(tiny_artifact):
    settings = harness.BenchSettings(intra_op_threads=1, warmup=1).validated()
    config = scenarios.scenario_config(run=["Offline", "Server"], latency_bound_ms=30)
    targets = harness.resolve_targets([str(tiny_artifact)])
    specs: list[dict] = []
    server, offline = scenarios.run_scenarios(
        targets, settings, config, runner=_fake_worker(130.0, specs)
    )
    assert [s["scenario"] for s in specs[:2]] == ["SingleStream", "Server"]  # one probe, shared
    assert specs[0]["expected_latency_ms"] is None and specs[0]["min_query_count"] == 32
    targets_tried = [p["target_qps"] for p in server["runs"]]
    assert targets_tried[:4] == [50, 100, 200, 150]  # half the probe's 100 QPS, then doubling
    assert server["validity"] == "VALID" and 123.5 <= server["value"] <= 130
    assert server["search"] == {"start_qps": 50, "stopped": "converged", "runs": len(targets_tried)}
    assert server["latency_bound_ms"] == 30 and server["latency_ms"]["p99"] == 4.0
    assert [p["expected_qps"] for p in offline["runs"]] == [200, 450]  # max(1.5 * 300, 2 * 200)
    assert offline["validity"] == "VALID" and offline["value"] == 300.0
    assert sum(s["scenario"] == "SingleStream" for s in specs) == 1


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"latency_bound_ms": 0}, "latency_bound_ms: Input should be greater than 0 (got 0)"),
        ({"latency_bound_ms": -5.0}, "latency_bound_ms"),
        ({"run": ["Sever"]}, "unknown scenario 'Sever'; use one of SingleStream, Server"),
        ({"server_min_qps": 50.0, "server_max_qps": 10.0}, "must be below server_max_qps"),
        ({"max_batch_size": 0}, "max_batch_size"),
    ],
)
def test_bad_scenario_settings_are_user_errors(overrides, expected):
    with pytest.raises(UserError, match="scenario setting") as info:
        scenarios.scenario_config(None, **overrides)
    assert expected in str(info.value)


def test_scenario_names_are_case_insensitive_and_none_keeps_the_base():
    base = ScenarioConfig(latency_bound_ms=20)
    config = scenarios.scenario_config(base, run=["server", "OFFLINE"], min_duration_s=None)
    assert config.run == ["Server", "Offline"]
    assert config.latency_bound_ms == 20 and config.min_duration_s == 10.0
    assert len(config.record()["config_hash"]) == 64


# ---------------------------------------------------------------- queries and batching


def _samples() -> dict[str, np.ndarray]:
    lengths = np.array([3, 6, 2, 5])
    ids = np.zeros((4, 6), dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = np.arange(1, n + 1) + 10 * i
    return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "lengths": lengths}


def test_query_batches_are_padded_to_their_longest_query():
    queries = loadgen_sut.QuerySamples(
        _samples(), ["input_ids", "attention_mask", "token_type_ids"]
    )
    feed = queries.batch([0, 2])
    assert feed["input_ids"].tolist() == [[1, 2, 3], [21, 22, 0]]
    assert feed["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert feed["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert queries.batch([1])["input_ids"].shape == (1, 6)
    with pytest.raises(UserError, match="not token inputs"):
        loadgen_sut.QuerySamples(_samples(), ["pixel_values"])


def _run_batcher(samples, **options) -> tuple[list[list[int]], list[int]]:
    queries = loadgen_sut.QuerySamples(_samples(), ["input_ids"])
    seen: list[list[int]] = []
    done: list[int] = []
    lock = threading.Lock()

    def infer(feed):
        with lock:
            seen.append(feed["input_ids"][:, 0].tolist())

    def complete(ids):
        with lock:
            done.extend(ids)

    batcher = loadgen_sut.DynamicBatcher([infer], queries, complete, **options)
    batcher.issue(samples)
    batcher.stop()
    return seen, done


def test_batcher_fills_batches_sorts_offline_and_answers_every_query():
    samples = [(100 + i, i % 4) for i in range(8)]
    seen, done = _run_batcher(samples, max_batch_size=4, max_queue_delay_s=5.0)
    assert sorted(done) == list(range(100, 108))
    assert [len(b) for b in seen] == [4, 4]  # the queue held 8: two full batches at once

    seen, _ = _run_batcher(samples[:4], max_batch_size=2, sort_by_length=True)
    assert seen == [[21, 1], [31, 11]]  # lengths 2, 3 | 5, 6: neighbours of similar length


def test_inline_batcher_answers_in_the_issuing_thread():
    queries = loadgen_sut.QuerySamples(_samples(), ["input_ids"])
    threads: list[int] = []
    done: list[int] = []
    batcher = loadgen_sut.DynamicBatcher(
        [lambda feed: threads.append(threading.get_ident())], queries, done.extend, inline=True
    )
    batcher.issue([(5, 1), (6, 2)])
    assert done == [5, 6] and threads == [threading.get_ident()] * 2  # answered before returning
    batcher.stop()
    assert batcher.stats()["count"] == 2 and batcher.stats()["mean_padded_length"] == 4.0


def test_batcher_reports_a_failing_model_after_answering_loadgen():
    queries = loadgen_sut.QuerySamples(_samples(), ["input_ids"])
    done: list[int] = []

    def broken(feed):
        raise RuntimeError("shape mismatch")

    batcher = loadgen_sut.DynamicBatcher([broken], queries, done.extend)
    batcher.issue([(7, 0)])
    with pytest.raises(RuntimeError, match="shape mismatch"):
        batcher.stop()
    assert done == [7]


# ---------------------------------------------------------------- records, ratios, gate, plot


def _record(model, variant, scenario, value, validity="VALID", bound=None, runs=()):
    return {
        "model": model,
        "variant": variant,
        "provider": "cpu",
        "scenario": scenario,
        "validity": validity,
        "value": value if validity == "VALID" else None,
        "latency_bound_ms": bound,
        "runs": list(runs),
    }


RECORDS = [
    _record("ref", "torch", "SingleStream", 10.0),
    _record("ref", "torch", "Server", 50.0, bound=20.0),
    _record("ref", "torch", "Offline", 200.0),
    _record("asc", "int8", "SingleStream", 4.0),
    _record(
        "asc",
        "int8",
        "Server",
        150.0,
        bound=20.0,
        runs=[
            {"target_qps": 100.0, "p99_ms": 5.0, "validity": "VALID"},
            {"target_qps": 200.0, "p99_ms": 400.0, "validity": "INVALID"},
        ],
    ),
    _record("asc", "int8", "Offline", None, validity="INVALID"),
]


def test_ratios_to_the_reference_leave_invalid_results_without_a_number():
    rows = {r["variant"]: r for r in scenarios.scenario_ratios(RECORDS, ("ref", "torch"))}
    asc = rows["int8"]
    assert asc["p90_latency_ms_ratio"] == 0.4
    assert asc["qps_at_bound_ratio"] == 3.0
    assert asc["samples_per_s"] is None and asc["samples_per_s_validity"] == "INVALID"
    assert asc["samples_per_s_ratio"] is None
    assert rows["torch"]["qps_at_bound_ratio"] == 1.0
    table = {r[1]: r for r in report.table_rows(RECORDS, ("ref", "torch"))}
    assert table["int8"] == ["asc", "int8", "4", "0.40x", "150", "3.00x", "INVALID", ""]


def test_min_qps_gate_by_absolute_rate_and_by_ratio():
    gate = scenarios.check_min_qps(RECORDS, ("asc", "int8"), "cpu", 20.0, min_qps=100)
    assert gate["passed"] and gate["value"] == 150.0 and gate["name"] == "min_qps_at_bound"
    gate = scenarios.check_min_qps(
        RECORDS, ("asc", "int8"), "cpu", 20.0, min_ratio=3.5, reference=("ref", "torch")
    )
    assert not gate["passed"] and gate["value"] == 3.0 and "3x the QPS" in gate["reason"]
    gate = scenarios.check_min_qps(RECORDS, ("asc", "int8"), "cpu", 10.0, min_qps=1)
    assert not gate["passed"] and "no Server result at p99 <= 10 ms" in gate["reason"]
    with pytest.raises(UserError, match="exactly one"):
        scenarios.check_min_qps(RECORDS, ("asc", "int8"), "cpu", 20.0)


def test_single_stream_agrees_with_the_harness_when_the_sut_adds_less_than_its_noise():
    check = {
        "harness_p90_ms": [3.9, 4.1],
        "harness_p50_ms": [3.5, 3.6],
        "harness_iterations": [300, 310],
        "model_p90_during_ms": 4.4,  # the host ran 10% slower during the LoadGen test
    }
    agreement = scenarios.harness_agreement(check, 4.62, noise_threshold=0.10)
    assert agreement["sut_overhead_ms"] == 0.22 and agreement["sut_overhead"] == 0.05
    assert agreement["difference_vs_loops"] == 0.155 and agreement["harness_spread"] == 0.05
    assert agreement["tolerance"] == 0.10 and agreement["within_noise"]
    assert not scenarios.harness_agreement(check, 4.62, noise_threshold=0.04)["within_noise"]
    wide = check | {"harness_p90_ms": [3.2, 4.8]}  # loops 40% apart: the noise is theirs
    assert scenarios.harness_agreement(wide, 6.0, noise_threshold=0.05)["tolerance"] == 0.4
    invalid = scenarios.harness_agreement(check, None, noise_threshold=0.10)
    assert invalid["within_noise"] is None and invalid["sut_overhead"] is None


def test_p99_plot_is_a_png_and_nothing_without_server_runs():
    png = report.p99_vs_qps_png(RECORDS)
    assert png is not None and png.startswith(b"\x89PNG")
    assert report.p99_vs_qps_png([r for r in RECORDS if r["scenario"] != "Server"]) is None


# ---------------------------------------------------------------- LoadGen for real


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scen")
    return make_artifact(root / "run" / "tiny" / "fp32", export_tiny_bert(root / "tiny.onnx"))


@pytest.fixture(scope="module")
def blocker(tmp_path_factory) -> Path:
    """A sitecustomize that makes `import torch` / `import transformers` fail in the child."""
    folder = tmp_path_factory.mktemp("block")
    (folder / "sitecustomize.py").write_text(
        "import sys\nfor name in ('torch', 'transformers'):\n    sys.modules[name] = None\n"
    )
    return folder


def cli(blocker: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-c", "from asc_deploy.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def test_loadgen_scenarios_run_without_torch_and_write_valid_records(
    blocker, tiny_artifact, tmp_path
):
    out = tmp_path / "bench.json"
    proc = cli(
        blocker,
        "bench",
        str(tiny_artifact),
        "--scenario",
        "SingleStream",
        "--scenario",
        "Server",
        "--scenario",
        "Offline",
        "--target-qps",
        "500",
        "--latency-bound-ms",
        "500",
        "--min-queries",
        "500",
        *FAST,
        "--output",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = harness.load_bench(out)
    assert json.loads(proc.stdout) == doc and doc["measurements"] == []
    records = {r["scenario"]: r for r in doc["scenarios"]}
    assert list(records) == ["SingleStream", "Server", "Offline"]
    for r in records.values():
        assert r["validity"] == "VALID" and r["value"] > 0 and r["invalid_reasons"] == []
        assert r["variant"] == "fp32" and r["verified"] and r["loadgen"]["version"] == "6.0.17"
        assert (
            r["sut"]["queries"] == 6 and r["sut"]["providers_in_use"][0] == "CPUExecutionProvider"
        )
        assert r["sut"]["gil_switch_interval_ms"] == 0.5
    single, server, offline = records["SingleStream"], records["Server"], records["Offline"]
    assert single["value"] == single["latency_ms"]["p90"] <= single["latency_ms"]["p99"]
    check = single["harness_check"]  # the harness loop around SingleStream, in its process
    assert min(check["harness_iterations"]) >= 6 and len(check["harness_p90_ms"]) == 2
    assert check["loadgen_p90_ms"] == single["value"]
    during = single["sut"]["batches"]["model_p90_ms"]
    assert check["model_p90_during_ms"] == during
    expected = (single["value"] - during) / during
    assert check["sut_overhead"] == pytest.approx(expected, abs=1e-4)
    assert check["within_noise"] == (abs(expected) <= check["tolerance"])
    assert "harness_check" not in server and "harness_check" not in offline
    # The model calls alone, timed inside the SUT: LoadGen's p90 includes them. How much the SUT
    # adds is a timing target, so it lives in benchmarks/serving_scenarios.py (sut_overhead).
    assert 0 < during <= single["value"]
    assert single["sut"]["batches"]["max_size"] == 1
    assert server["target_qps"] == 500 and server["latency_bound_ms"] == 500
    assert server["loadgen"]["settings"]["target_qps"] == 500
    assert server["loadgen"]["summary"]["Scenario"] == "Server"
    assert server["latency_ms"]["p99"] <= 500
    assert offline["sut"]["batches"]["max_size"] == 32 and offline["sut"]["sort_by_length"]
    assert offline["runs"][-1]["validity"] == "VALID"
    assert doc["scenario_settings"]["run"] == ["SingleStream", "Server", "Offline"]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--scenario", "Server", "--latency-bound-ms", "0"], "latency_bound_ms"),
        (["--scenario", "Burst"], "unknown scenario 'Burst'"),
        (
            ["--scenario", "Server", "--target-qps", "200", "--latency-bound-ms", "0.0001"],
            "LoadGen could not serve 200 QPS with p99 <= 0.0001 ms",
        ),
    ],
)
def test_bad_scenario_input_is_one_error_line_exit_2(
    blocker, tiny_artifact, tmp_path, extra, expected
):
    out = tmp_path / "bench.json"
    proc = cli(
        blocker, "bench", str(tiny_artifact), *extra, "--min-queries", "20", *FAST, "-o", str(out)
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr
    assert not out.exists()


def test_a_bound_no_rate_meets_is_reported_invalid_not_as_a_number(tiny_artifact, tmp_path):
    settings = harness.BenchSettings(intra_op_threads=1, warmup=1).validated()
    config = scenarios.scenario_config(
        run=["Server"],
        latency_bound_ms=0.0001,
        server_start_qps=100,
        server_min_qps=50,
        min_duration_s=0.2,
        min_query_count=20,
        log_dir=tmp_path / "loadgen",
    )
    targets = harness.resolve_targets([str(tiny_artifact)])
    [record] = scenarios.run_scenarios(targets, settings, config)
    assert record["validity"] == "INVALID" and record["value"] is None
    assert record["latency_ms"] is None
    assert [p["target_qps"] for p in record["runs"]] == [100, 50]
    assert all(p["validity"] == "INVALID" for p in record["runs"])
    for point in record["runs"]:  # LoadGen's own logs kept, one folder per run
        summary = Path(point["log_dir"]) / loadgen_sut.SUMMARY_FILE
        assert "Result is : INVALID" in summary.read_text()
    assert record["search"]["stopped"].startswith("INVALID down to server_min_qps")
    assert "Performance constraints satisfied: NO" in record["invalid_reasons"]
    [flag] = scenarios.scenario_flags([record])
    assert flag.startswith("LoadGen INVALID: Server for tiny/fp32 on cpu")
