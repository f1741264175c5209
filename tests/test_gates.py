"""Recommendation and release gates on a real run's results, each gate both ways.

The values a gate must see (a pick that drops accuracy, a slower baseline) are derived from the
tiny end-to-end run's records (tests/pipeline_helpers.py), never invented: a changed accuracy
under the point rule, or rewritten predictions whose paired comparison is recomputed by the
statistics the pipeline uses, under non-inferiority.
"""

from __future__ import annotations

import pytest
import yaml
from pipeline_helpers import with_wrong_answers, without_stored_bounds

from asc_deploy.config import GatesConfig
from asc_deploy.errors import UserError
from asc_deploy.records import Gate, Pick, Results, load_results
from asc_deploy.report import gates as G
from asc_deploy.report import results as R
from asc_deploy.report.recommend import recommend, within_budget


@pytest.fixture
def results(run_results_file) -> Results:
    return load_results(run_results_file)


def _config(results: Results, **overrides) -> GatesConfig:
    return GatesConfig.model_validate({**G.gates_config(results).model_dump(), **overrides})


def _run(results: Results, baseline=None, scope="recommended", **overrides) -> dict[str, Gate]:
    config = _config(results, **overrides)
    rec = recommend(results, config)
    return {g.name: g for g in G.evaluate_gates(results, config, rec, baseline, scope)}


def _with_primary(results: Results, model: str, variant: str, primary: float) -> Results:
    """The run as if (model, variant) had scored `primary` (its delta follows on validation)."""
    doc = results.dump()
    for ev in doc["evaluations"]:
        if (ev["model"], ev["variant"]) == (model, variant):
            ev["primary"] = primary
    return Results.model_validate(doc)


def _with_latency(results: Results, factor: float, model=None, variant=None) -> Results:
    """The run with p50 multiplied by `factor` (for one artifact, or for all)."""
    doc = results.dump()
    for m in doc["bench"][0]["measurements"]:
        if model is None or (m["model"], m["variant"]) == (model, variant):
            m["latency_ms"]["p50"] *= factor
    return Results.model_validate(doc)


def _fastest_within(results: Results, budget: float):
    """What the recommendation must be, computed here from the measurements directly."""
    reference = results.reference_evaluation().primary
    candidates = [
        m
        for m in results.bench[0].measurements
        if m.shape == (1, 16)
        and (ev := results.evaluation(m.model, m.variant)) is not None
        and ev.primary >= reference - budget - 1e-9
    ]
    return min(candidates, key=lambda m: m.latency_ms.p50)


def _reference_p50(results: Results) -> float:
    ref = next(m for m in results.bench[0].measurements if m.key[1:3] == ("uncompressed", "torch"))
    return ref.latency_ms.p50


# -- the point rule: the recommendation and the gate as they were before non-inferiority ----------
def test_recommendation_is_fastest_within_budget(results):
    rec = recommend(results, _config(results, decision="point"))["cpu"]
    best = _fastest_within(results, 1.0)
    assert (rec.model, rec.variant, rec.p50_ms) == (best.model, best.variant, best.latency_ms.p50)
    assert rec.speedup == pytest.approx(_reference_p50(results) / best.latency_ms.p50)
    assert rec.delta == results.evaluation(best.model, best.variant).delta
    assert rec.host == results.bench[0].host.fingerprint and rec.by_host is None


def test_recommendation_follows_the_budget(results):
    best = _fastest_within(results, 1.0)
    reference = results.reference_evaluation().primary
    worse = _with_primary(results, best.model, best.variant, reference - 1.5)
    narrow = recommend(worse, _config(worse, decision="point"))["cpu"]
    second = _fastest_within(worse, 1.0)
    assert (narrow.model, narrow.variant) == (second.model, second.variant)
    assert (narrow.model, narrow.variant) != (best.model, best.variant)
    wide = recommend(worse, _config(worse, accuracy_budget=1.5, decision="point"))["cpu"]
    assert (wide.model, wide.variant) == (best.model, best.variant)
    off_shape = recommend(results, _config(results, speedup_shape=(1, 64)))["cpu"]
    assert off_shape.model is None and "1x64" in off_shape.reason


def test_accuracy_gate_both_ways(results):
    pick = recommend(results, _config(results, decision="point"))["cpu"]
    ok = _run(results, decision="point")["max_accuracy_drop"]
    assert ok.passed and ok.value == pytest.approx(-pick.delta) and ok.limit == 100.0
    # The same pick, 0.7 points below the uncompressed model: within the 1.0 budget, over 0.5.
    reference = results.reference_evaluation().primary
    dropped = _with_primary(results, pick.model, pick.variant, reference - 0.7)
    bad = _run(dropped, max_accuracy_drop=0.5, decision="point")["max_accuracy_drop"]
    assert not bad.passed and bad.value == pytest.approx(0.7)
    assert bad.reason == f"{pick.model} {pick.variant} drops 0.7 points > 0.5"
    # Scope "asc": every ASC artifact, so a broken one nobody picked fails the gate too.
    broken = _with_primary(results, "asc-0.90", "torch", reference - 3.0)
    assert _run(broken, max_accuracy_drop=1.0, decision="point")["max_accuracy_drop"].passed
    wide = _run(broken, scope="asc", max_accuracy_drop=1.0, decision="point")["max_accuracy_drop"]
    assert not wide.passed and wide.reason == "asc-0.90 torch drops 3.0 points > 1.0"


# -- non-inferiority: the one-sided 95% lower bound decides ---------------------------------------
def _fastest_shown(results: Results, budget: float):
    """The non-inferior recommendation, computed here from the measurements and the stored
    one-sided bounds directly."""
    reference = results.reference_evaluation().key
    candidates = [
        m
        for m in results.bench[0].measurements
        if m.shape == (1, 16)
        and (ev := results.evaluation(m.model, m.variant)) is not None
        and (ev.key == reference or ev.comparison["ni_low"] >= -budget)
    ]
    return min(candidates, key=lambda m: m.latency_ms.p50)


@pytest.fixture
def one_wrong(results, tmp_path) -> tuple[Results, Pick]:
    """The run with its recommended artifact wrong on one more of its 24 examples, one the
    uncompressed model gets right; and that artifact."""
    pick = recommend(results, _config(results))["cpu"]
    return with_wrong_answers(results, pick.model, pick.variant, 1, tmp_path), pick


def _key(pick) -> tuple[str, str]:
    return (pick.model, pick.variant)


def test_the_recommendation_is_the_fastest_artifact_shown_non_inferior(results):
    for budget in (1.0, 20.0):
        shown = recommend(results, _config(results, accuracy_budget=budget))["cpu"]
        assert _key(shown) == _key(_fastest_shown(results, budget))
        point = recommend(results, _config(results, accuracy_budget=budget, decision="point"))
        assert _key(point["cpu"]) == _key(_fastest_within(results, budget))


def test_non_inferiority_takes_the_bound_where_the_point_rule_takes_the_delta(one_wrong):
    flipped, pick = one_wrong
    comparison = flipped.evaluation(*_key(pick)).comparison
    # One of 24 wrong: -4.17 points; the bootstrap's 5% quantile is 3 of 24 wrong, -12.5.
    assert comparison["delta"] == pytest.approx(-100 / 24)
    assert comparison["ni_low"] == pytest.approx(-12.5) and comparison["ni_confidence"] == 0.95
    assert _key(pick) in within_budget(flipped, 5.0, "point")
    assert _key(pick) not in within_budget(flipped, 5.0)
    assert _key(pick) in within_budget(flipped, 12.5)
    shown = recommend(flipped, _config(flipped, accuracy_budget=5))["cpu"]
    assert _key(shown) == _key(_fastest_shown(flipped, 5)) != _key(pick)
    point = recommend(flipped, _config(flipped, accuracy_budget=5, decision="point"))["cpu"]
    assert _key(point) == _key(_fastest_within(flipped, 5))


def test_accuracy_gate_names_the_one_sided_bound(one_wrong):
    flipped, pick = one_wrong
    chosen = {"cpu": Pick(model=pick.model, variant=pick.variant)}
    gate = G.accuracy_gate(flipped, chosen, 5.0, "recommended")
    assert not gate.passed and gate.value == pytest.approx(12.5)
    label = f"{pick.model} {pick.variant}"
    assert gate.reason == f"{label}: \u22124.17 [one-sided 95% lower bound \u221212.50] < \u22125.0"
    assert G.accuracy_gate(flipped, chosen, 12.5, "recommended").passed
    point = G.accuracy_gate(flipped, chosen, 5.0, "recommended", "point")
    assert point.passed and point.reason == f"{label} drops 4.17 points <= 5.0"
    # What the non-inferior recommendation picks instead passes at that limit.
    gates = _run(flipped, accuracy_budget=5, max_accuracy_drop=5)
    assert gates["max_accuracy_drop"].passed


@pytest.mark.parametrize("decision", ["non-inferior", "point"])
def test_gate_and_recommendation_agree_on_every_artifact(one_wrong, decision):
    flipped, _ = one_wrong
    for budget in (1.0, 5.0, 13.0):
        within = within_budget(flipped, budget, decision)
        for ev in flipped.evaluations:
            chosen = {"cpu": Pick(model=ev.model, variant=ev.variant)}
            gate = G.accuracy_gate(flipped, chosen, budget, "recommended", decision)
            assert gate.passed == (ev.key in within), (ev.key, budget, gate.reason)
    assert flipped.reference_evaluation().key in within_budget(flipped, 0.0)


def test_an_evaluation_without_a_stored_bound_is_undecided(results):
    """A results.json written before the bound: it loads, its artifacts are not shown within
    any budget (the uncompressed model still is), and the gate says which field is missing."""
    doc = without_stored_bounds(results.dump())
    old = Results.model_validate(doc)
    assert G.gates_config(old).decision == "non-inferior"
    assert within_budget(old, 100.0) == {old.reference_evaluation().key}
    assert within_budget(old, 1.0, "point") == within_budget(results, 1.0, "point")
    rec = recommend(old, _config(old))["cpu"]
    assert (rec.model, rec.variant) == old.reference_evaluation().key
    gate = _run(old, scope="asc")["max_accuracy_drop"]
    assert not gate.passed and gate.value is None
    assert (
        "no one-sided 95% lower bound stored for accuracy (comparison field ni_low" in gate.reason
    )
    assert "set gates.decision: point" in gate.reason


def test_an_unknown_decision_is_one_error_naming_the_key(tmp_path, results):
    from asc_deploy.config import load_run_config

    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump({"model": "m", "task": {"preset": "sst2"}, "gates": {"decision": "ci"}})
    )
    with pytest.raises(UserError, match="key 'gates.decision': Input should be") as raised:
        load_run_config(config)
    assert "\n" not in str(raised.value)
    results.run.config["gates"]["decision"] = "ci"
    with pytest.raises(UserError, match="run.config.gates.decision"):
        G.gates_config(results)


def test_speedup_gate_both_ways(results):
    pick = recommend(results, _config(results))["cpu"]
    ok = _run(results, min_speedup=pick.speedup / 2)["min_speedup"]
    assert ok.passed and ok.value == pytest.approx(round(pick.speedup, 4))
    limit = round(pick.speedup * 2, 1)
    bad = _run(results, min_speedup=limit)["min_speedup"]
    assert not bad.passed
    assert bad.reason == (
        f"{pick.model} {pick.variant} is {pick.speedup:.2f}x on cpu 1x16 < {G.fmt_limit(limit)}x"
    )
    missing = _run(results, min_speedup=1.0, speedup_shape=(1, 64))["min_speedup"]
    assert not missing.passed and "no artifact measured on cpu 1x64" in missing.reason


def test_speedup_gate_fails_without_a_pytorch_baseline(results):
    run = results.bench[0]
    run.measurements[:] = [m for m in run.measurements if m.runtime != "torch"]
    gate = _run(results, min_speedup=1.0)["min_speedup"]
    assert not gate.passed and "no uncompressed PyTorch measurement" in gate.reason


def test_latency_regression_gate_both_ways(results):
    same = _run(results, baseline=results, max_latency_regression=0.1)["max_latency_regression"]
    assert same.passed and same.value == pytest.approx(0.0)
    m = next(m for m in results.bench[0].measurements if m.key[1:3] == ("asc-0.90", "fp32"))
    baseline = _with_latency(results, 0.8, "asc-0.90", "fp32")  # now 25% slower than that
    gate = _run(results, baseline=baseline, max_latency_regression=0.1)["max_latency_regression"]
    assert not gate.passed and gate.value == pytest.approx(0.25)
    assert gate.reason == (
        f"asc-0.90 fp32 cpu 1x16 p50 {m.latency_ms.p50:.2f} ms vs "
        f"{m.latency_ms.p50 * 0.8:.2f} ms baseline (+25% > 10%)"
    )
    # A noisy measurement is not evidence of a regression.
    m.noisy = True
    noisy = _run(results, baseline=baseline, max_latency_regression=0.1)["max_latency_regression"]
    assert noisy.passed


def test_latency_regression_matches_across_hosts_with_a_note(results):
    doc = results.dump()
    doc["bench"][0]["host"]["fingerprint"] = "f" * 16
    baseline = Results.model_validate(doc)
    gate = _run(results, baseline=baseline, max_latency_regression=0.1)["max_latency_regression"]
    assert gate.passed and gate.reason.endswith("(baseline measured on a different host)")


def test_latency_regression_without_baseline_fails(results):
    gate = _run(results, max_latency_regression=0.1)["max_latency_regression"]
    assert not gate.passed and "--baseline" in gate.reason


def test_size_gate_both_ways(results):
    pick = recommend(results, _config(results))["cpu"]
    size = results.evaluation(pick.model, pick.variant).size_bytes / 1e6
    ok = _run(results, max_size_mb=1000)["max_size_mb"]
    assert ok.passed and ok.value == pytest.approx(round(size, 3))
    bad = _run(results, max_size_mb=0.01)["max_size_mb"]
    assert not bad.passed
    assert bad.reason == f"{pick.model} {pick.variant} is {size:.1f} MB > 0.01 MB"


def test_unset_gates_are_not_reported_and_failure_lines(results):
    assert _run(results, max_accuracy_drop=None) == {}
    pick = recommend(results, _config(results))["cpu"]
    size = results.evaluation(pick.model, pick.variant).size_bytes / 1e6
    gates = list(_run(results, max_size_mb=0.01, min_speedup=1e-6).values())
    assert [g.name for g in gates] == ["max_accuracy_drop", "min_speedup", "max_size_mb"]
    assert G.failure_lines(gates) == [
        f"gate max_size_mb failed: {pick.model} {pick.variant} is {size:.1f} MB > 0.01 MB"
    ]


def test_picks_on_two_hosts_and_the_worse_speedup_gates(results):
    doc = results.dump()
    host = {**doc["bench"][0]["host"], "fingerprint": "e" * 16, "hostname": "edge-box"}
    edge = Results.model_validate({**doc, "bench": [{**doc["bench"][0], "host": host}]}).bench[0]
    two = R.merge_bench(results, [edge])
    # The edge host's ONNX artifacts are 3x slower; its PyTorch baseline is unchanged.
    for m in edge.measurements:
        if m.runtime == "onnxruntime":
            m.latency_ms.p50 *= 3
    rec = recommend(two, _config(two))["cpu"]
    own_label = R.host_labels(two)[0]
    assert list(rec.by_host) == [own_label, "edge-box (eeeeeeee)"]
    own, on_edge = rec.by_host[own_label], rec.by_host["edge-box (eeeeeeee)"]
    assert (rec.model, rec.variant, rec.host_label) == (own.model, own.variant, own_label)
    assert (on_edge.model, on_edge.variant) == (own.model, own.variant)
    assert on_edge.speedup == pytest.approx(own.speedup / 3)
    gate = _run(two, min_speedup=1e-6)["min_speedup"]
    assert gate.value == pytest.approx(round(on_edge.speedup, 4))
    assert gate.reason.endswith("on edge-box (eeeeeeee) >= 1e-06x")


def test_invalid_gates_config_is_a_user_error(results):
    results.run.config["gates"]["max_size_gb"] = 1
    with pytest.raises(UserError, match="max_size_gb"):
        G.gates_config(results)


def _server(results: Results, model: str, variant: str) -> dict:
    run = results.bench[0]
    return next(
        r
        for r in run.scenarios
        if (r["model"], r["variant"], r["scenario"]) == (model, variant, "Server")
    )


def test_qps_gate_reads_the_recommended_artifacts_real_server_run(results):
    bound = results.bench[0].scenarios[0]["latency_bound_ms"]
    pick = recommend(results, _config(results))["cpu"]
    served = _server(results, pick.model, pick.variant)["value"]
    assert served > 0
    limit = {"provider": "cpu", "latency_bound_ms": bound}
    gate = _run(results, min_qps_at_bound={**limit, "min_qps": served})["min_qps_at_bound"]
    assert gate.passed and gate.value == served and f"{pick.model}/{pick.variant}" in gate.reason
    gate = _run(results, min_qps_at_bound={**limit, "min_qps": served * 1.01})["min_qps_at_bound"]
    assert not gate.passed and "<" in gate.reason
    # By ratio: against the uncompressed PyTorch model served through the same SUT.
    ratio = served / _server(results, "uncompressed", "torch")["value"]
    gate = _run(results, min_qps_at_bound={**limit, "min_ratio": ratio * 0.99})["min_qps_at_bound"]
    assert gate.passed and gate.value == pytest.approx(ratio, abs=1e-4)
    assert "the QPS of uncompressed/torch" in gate.reason
    gate = _run(results, min_qps_at_bound={**limit, "min_ratio": ratio * 1.01})["min_qps_at_bound"]
    assert not gate.passed


def test_qps_gate_fails_on_an_invalid_or_missing_server_result(results):
    bound = results.bench[0].scenarios[0]["latency_bound_ms"]
    pick = recommend(results, _config(results))["cpu"]
    record = _server(results, pick.model, pick.variant)
    record.update(validity="INVALID", value=None)
    gate = _run(results, min_qps_at_bound={"latency_bound_ms": bound, "min_qps": 1})
    assert not gate["min_qps_at_bound"].passed
    assert "Server result INVALID" in gate["min_qps_at_bound"].reason
    results.bench[0].scenarios.clear()
    gate = _run(results, min_qps_at_bound={"latency_bound_ms": bound, "min_qps": 1})
    assert gate["min_qps_at_bound"].reason == "no Server scenario measured on cpu"


@pytest.mark.parametrize(
    "gate, bench, expected",
    [
        ({"latency_bound_ms": 50}, {"scenarios": {"run": ["Server"]}}, "exactly one of"),
        (
            {"latency_bound_ms": 50, "min_qps": 10, "min_ratio": 2},
            {"scenarios": {"run": ["Server"]}},
            "exactly one of",
        ),
        ({"latency_bound_ms": 50, "min_qps": 10}, {}, "add Server to bench.scenarios.run"),
        (
            {"latency_bound_ms": 20, "min_qps": 10},
            {"scenarios": {"run": ["Server"], "latency_bound_ms": 50}},
            "differs from bench.scenarios.latency_bound_ms 50",
        ),
        (
            {"latency_bound_ms": 50, "min_qps": 10, "provider": "cuda"},
            {"scenarios": {"run": ["Server"]}},
            "provider cuda is not in bench.providers",
        ),
        ({"latency_bound_ms": 0, "min_qps": 10}, {}, "greater than 0"),
    ],
)
def test_a_qps_gate_the_bench_cannot_check_is_refused_up_front(tmp_path, gate, bench, expected):
    from asc_deploy.config import load_run_config

    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": "m",
                "task": {"preset": "sst2"},
                "bench": bench,
                "gates": {"min_qps_at_bound": gate},
            }
        )
    )
    with pytest.raises(UserError, match=expected):
        load_run_config(config)


def _noisy_baseline(results: Results) -> Results:
    """The run as if the uncompressed PyTorch cell, still noisy after re-measuring, had rounds at
    a quarter, once and twice its pooled p50 (the pick's own rounds unchanged)."""
    doc = results.dump()
    for m in doc["bench"][0]["measurements"]:
        if (m["model"], m["variant"]) == ("uncompressed", "torch"):
            p50 = m["latency_ms"]["p50"]
            m.update(noisy=True, round_spread=1.75, remeasured=2)
            m["round_p50_ms"] = [p50 / 4, p50, p50 * 2]
    return Results.model_validate(doc)


def test_a_noisy_speedup_decides_only_when_all_its_round_pairings_agree(results):
    pick = recommend(results, _config(results))["cpu"]
    mine = next(
        m
        for m in results.bench[0].measurements
        if (m.model, m.variant, m.batch, m.sequence) == (pick.model, pick.variant, 1, 16)
    )
    (c,) = mine.round_p50_ms  # one round in the tiny run
    base = _reference_p50(results)
    low, high = base / 4 / c, base * 2 / c
    noisy = _noisy_baseline(results)
    # Every pairing passes: PASS, valued at the pairing nearest the limit.
    gate = _run(noisy, min_speedup=low * 0.9)["min_speedup"]
    assert gate.passed and not gate.inconclusive and gate.value == pytest.approx(low, rel=1e-3)
    assert "uncompressed torch round spread 175%" in gate.reason and "all >=" in gate.reason
    # The limit between the pairings: inconclusive, never PASS, exit 3.
    gate = _run(noisy, min_speedup=(low + high) / 2)["min_speedup"]
    assert not gate.passed and gate.inconclusive and "on both sides of" in gate.reason
    assert G.failure_lines([gate]) == [f"gate min_speedup inconclusive: {gate.reason}"]
    assert G.exit_code([gate]) == G.EXIT_INCONCLUSIVE == 3
    # Every pairing fails: FAIL, valued at the best pairing.
    gate = _run(noisy, min_speedup=high * 1.1)["min_speedup"]
    assert not gate.passed and not gate.inconclusive and gate.value == pytest.approx(high, rel=1e-3)
    # A gate that failed outright decides the exit code over an inconclusive one.
    both = _run(noisy, min_speedup=(low + high) / 2, max_size_mb=1e-6)
    assert G.exit_code(both.values()) == G.EXIT_FAILED
    assert G.exit_code(_run(results, min_speedup=pick.speedup / 2).values()) == 0


def test_speedup_gate_is_inconclusive_on_a_busy_host(results):
    pick = recommend(results, _config(results))["cpu"]
    doc = results.dump()
    doc["bench"][0]["noise"] = {"floor": 0.42, "threshold": 0.2, "host_busy": True}
    gate = _run(Results.model_validate(doc), min_speedup=pick.speedup / 2)["min_speedup"]
    assert (
        gate.inconclusive and "the host was busy (bare session.run loop spread 42%)" in gate.reason
    )


def _with_trial(
    results: Results, ratios: list[float], looks=(7, 10, 13, 16), bares=None
) -> Results:
    """The run as if `run` had timed its pick back to back with the uncompressed PyTorch model
    and measured these per-round ratios (the pick's own p50 on the candidate side), with the
    bare loop at `bares` ms a round (the bench's: 0.2 ms)."""
    pick = recommend(results, _config(results))["cpu"]
    doc = results.dump()
    doc["speed_trials"] = [
        {
            "host": pick.host,
            "provider": "cpu",
            "batch": pick.batch,
            "sequence": pick.sequence,
            "model": pick.model,
            "variant": pick.variant,
            "baseline": "uncompressed",
            "limit": 1.5,
            "rounds": [
                {"baseline_ms": pick.p50_ms * r, "candidate_ms": pick.p50_ms, "bare_ms": bare}
                for r, bare in zip(ratios, bares or [0.2] * len(ratios), strict=True)
            ],
            "quiet_bare_ms": 0.2,
            "looks": list(looks),
            "test": "exact sign test",
        }
    ]
    return Results.model_validate(doc)


def test_a_speed_trial_decides_the_gate_on_its_paired_bounds(results):
    ratios = [3.1, 2.4, 3.6, 2.9, 2.2, 3.3, 2.7]  # 40% round-to-round spread, all above 2
    trial = _with_trial(results, ratios)
    gate = _run(trial, min_speedup=1.5)["min_speedup"]
    assert gate.passed and gate.value == pytest.approx(2.2)  # the lower bound: the minimum
    assert "in 7 rounds: median 2.90x, one-sided 95% bounds [2.20x, 3.60x]" in gate.reason
    gate = _run(trial, min_speedup=4.0)["min_speedup"]
    assert not gate.passed and not gate.inconclusive and "upper bound < 4.0x" in gate.reason
    gate = _run(trial, min_speedup=2.9)["min_speedup"]
    assert gate.inconclusive and "straddle 2.9x" in gate.reason


def test_a_busy_host_no_longer_vetoes_what_the_paired_bounds_settle(results):
    doc = _with_trial(results, [3.1, 2.4, 3.6, 2.9, 2.2, 3.3, 2.7]).dump()
    doc["bench"][0]["noise"] = {"floor": 0.37, "threshold": 0.74, "host_busy": True}
    gate = _run(Results.model_validate(doc), min_speedup=1.5)["min_speedup"]
    assert gate.passed and not gate.inconclusive
    assert "(the host was busy in the bench: bare loop spread 37%)" in gate.reason


def test_a_trial_of_another_artifact_is_not_read(results):
    doc = _with_trial(results, [3.0] * 7).dump()
    doc["speed_trials"][0]["variant"] = "not-the-pick"
    gate = _run(Results.model_validate(doc), min_speedup=1e6)["min_speedup"]
    assert "back to back" not in gate.reason


def test_rounds_under_load_are_left_out_of_the_speed_verdict(results):
    ratios = [3.1, 2.4, 3.6, 2.9, 2.2, 3.3, 2.7] + [5.5] * 7
    bares = [0.21] * 7 + [0.6] * 7  # the last seven under load: the bare loop 3x slower
    gate = _run(_with_trial(results, ratios, bares=bares), min_speedup=4.0)["min_speedup"]
    assert not gate.passed and not gate.inconclusive  # 5.5x under load does not pass 4x
    assert "in 14 rounds (7 loaded: bare loop over 1.5x the bench's, left out)" in gate.reason
    only_loaded = _with_trial(results, [5.5] * 7, bares=[0.6] * 7)
    gate = _run(only_loaded, min_speedup=4.0)["min_speedup"]
    assert gate.inconclusive and "too few rounds without load" in gate.reason
