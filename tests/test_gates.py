"""Recommendation and release gates on the synthetic results fixture, each gate both ways."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from asc_deploy.config import GatesConfig
from asc_deploy.errors import UserError
from asc_deploy.report import gates as G
from asc_deploy.report.recommend import recommend

FIXTURE = Path(__file__).parent / "fixtures" / "results_example.json"
BUILD, EDGE = "build-box (aaaaaaaa)", "edge-box (bbbbbbbb)"


@pytest.fixture
def results() -> dict:
    return json.loads(FIXTURE.read_text())


def _config(results, **overrides) -> GatesConfig:
    return G.gates_config(results).model_copy(update=overrides)


def _run(results, baseline=None, scope="recommended", **overrides) -> dict[str, dict]:
    config = _config(results, **overrides)
    rec = recommend(results, config)
    return {g["name"]: g for g in G.evaluate_gates(results, config, rec, baseline, scope)}


def test_recommendation_is_fastest_within_budget_per_host(results):
    rec = recommend(results, _config(results))["cpu"]
    # asc-0.85 int8-dynamic (3.1 ms) is faster but 1.4 points down: outside the 1.0 budget.
    assert (rec["model"], rec["variant"], rec["host_label"]) == ("asc-0.90", "int8-dynamic", BUILD)
    assert rec["p50_ms"] == 3.9 and rec["speedup"] == pytest.approx(12.0 / 3.9)
    assert rec["delta"] == pytest.approx(-0.7)
    edge = rec["by_host"][EDGE]
    assert (edge["model"], edge["variant"], edge["p50_ms"]) == ("asc-0.85", "fp32", 4.0)


def test_recommendation_follows_the_budget(results):
    wide = recommend(results, _config(results, accuracy_budget=1.5))["cpu"]
    assert (wide["model"], wide["variant"]) == ("asc-0.85", "int8-dynamic")
    none = recommend(results, _config(results, accuracy_budget=0.0))["cpu"]
    assert (none["model"], none["variant"]) == ("uncompressed", "fp32")
    off_shape = recommend(results, _config(results, speedup_shape=(1, 64)))["cpu"]
    assert off_shape["model"] is None and "1x64" in off_shape["reason"]


def test_accuracy_gate_both_ways(results):
    ok = _run(results)["max_accuracy_drop"]
    assert ok["passed"] and ok["value"] == pytest.approx(0.7) and ok["limit"] == 1.0
    bad = _run(results, max_accuracy_drop=0.5)["max_accuracy_drop"]
    assert not bad["passed"]
    assert bad["reason"] == "asc-0.90 int8-dynamic drops 0.7 points > 0.5"
    # Scope "asc": every ASC artifact, so asc-0.80 int8-dynamic (-3.0) fails a 1.0 limit.
    wide = _run(results, scope="asc")["max_accuracy_drop"]
    assert not wide["passed"] and wide["reason"].startswith("asc-0.80 int8-dynamic drops 3.0")


def test_speedup_gate_both_ways(results):
    ok = _run(results)["min_speedup"]
    # The worse of the two hosts' picks: edge-box asc-0.85 fp32, 10.0 / 4.0.
    assert ok["passed"] and ok["value"] == pytest.approx(2.5)
    bad = _run(results, min_speedup=3.0)["min_speedup"]
    assert not bad["passed"]
    assert bad["reason"] == "asc-0.85 fp32 is 2.50x on cpu 1x128 on edge-box (bbbbbbbb) < 3.0x"
    missing = _run(results, speedup_shape=(1, 64))["min_speedup"]
    assert not missing["passed"] and "no artifact measured on cpu 1x64" in missing["reason"]


def test_speedup_gate_fails_without_a_pytorch_baseline(results):
    for doc in results["bench"]:
        doc["measurements"] = [m for m in doc["measurements"] if m["runtime"] != "torch"]
    gate = _run(results)["min_speedup"]
    assert not gate["passed"] and "no uncompressed PyTorch measurement" in gate["reason"]


def test_latency_regression_gate_both_ways(results):
    same = _run(results, baseline=copy.deepcopy(results), max_latency_regression=0.1)
    assert same["max_latency_regression"]["passed"]
    assert same["max_latency_regression"]["value"] == pytest.approx(0.0)
    baseline = copy.deepcopy(results)
    target = next(
        m
        for m in baseline["bench"][1]["measurements"]
        if (m["model"], m["variant"], m["batch"]) == ("asc-0.85", "fp32", 1)
    )
    target["latency_ms"]["p50"] = 3.2  # now 4.0 ms: 25% slower than the baseline
    gate = _run(results, baseline=baseline, max_latency_regression=0.1)["max_latency_regression"]
    assert not gate["passed"] and gate["value"] == pytest.approx(0.25)
    assert gate["reason"] == (
        "asc-0.85 fp32 cpu 1x128 p50 4.00 ms vs 3.20 ms baseline (+25% > 10%)"
    )
    # A noisy measurement is not evidence of a regression.
    next(
        m
        for m in results["bench"][1]["measurements"]
        if (m["model"], m["variant"], m["batch"]) == ("asc-0.85", "fp32", 1)
    )["noisy"] = True
    assert _run(results, baseline=baseline, max_latency_regression=0.1)["max_latency_regression"][
        "passed"
    ]


def test_latency_regression_matches_across_hosts_with_a_note(results):
    baseline = copy.deepcopy(results)
    baseline["bench"] = [copy.deepcopy(results["bench"][0])]
    baseline["bench"][0]["host"]["fingerprint"] = "f" * 64
    results["bench"] = results["bench"][:1]
    gate = _run(results, baseline=baseline, max_latency_regression=0.1)["max_latency_regression"]
    assert gate["passed"] and gate["reason"].endswith("(baseline measured on a different host)")


def test_latency_regression_without_baseline_fails(results):
    gate = _run(results, max_latency_regression=0.1)["max_latency_regression"]
    assert not gate["passed"] and "--baseline" in gate["reason"]


def test_size_gate_both_ways(results):
    ok = _run(results)["max_size_mb"]
    assert ok["passed"] and ok["value"] == pytest.approx(77.1)
    bad = _run(results, max_size_mb=50)["max_size_mb"]
    assert not bad["passed"] and bad["reason"] == "asc-0.85 fp32 is 77.1 MB > 50.0 MB"


def test_unset_gates_are_not_reported_and_failure_lines(results):
    none = _run(results, max_accuracy_drop=None, min_speedup=None, max_size_mb=None)
    assert none == {}
    gates = list(_run(results, max_accuracy_drop=0.5, max_size_mb=50).values())
    assert G.failure_lines(gates) == [
        "gate max_accuracy_drop failed: asc-0.90 int8-dynamic drops 0.7 points > 0.5",
        "gate max_size_mb failed: asc-0.85 fp32 is 77.1 MB > 50.0 MB",
    ]


def test_invalid_gates_config_is_a_user_error(results):
    results["run"]["config"]["gates"]["max_size_gb"] = 1
    with pytest.raises(UserError, match="max_size_gb"):
        G.gates_config(results)
