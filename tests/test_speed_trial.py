"""The speed verdict on per-round paired ratios (measure/speed_trial.py): synthetic pairs with a
known ratio and injected round noise, decided as the gate would decide them."""

from __future__ import annotations

import numpy as np
import pytest

from asc_deploy.measure.speed_trial import (
    LOAD_LIMIT,
    MIN_ROUNDS,
    Round,
    bare_bound,
    decide,
    decide_rounds,
    looks,
    run_trial,
)

BASELINE_MS = 30.0


def noisy_pair(true_ratio: float, noise: float, seed: int):
    """measure(side) -> a p50: the side's true time, slowed by up to `noise` at random in every
    measurement (independently for the two sides: the worst case for a paired ratio)."""
    rng = np.random.default_rng(seed)
    times = {"baseline": BASELINE_MS, "candidate": BASELINE_MS / true_ratio}

    def measure(side):
        return times[side] * (1 + noise * rng.random())

    return measure


def verdict(true_ratio: float, limit: float, seed: int = 0, noise: float = 0.4, extra: int = 9):
    return run_trial(noisy_pair(true_ratio, noise, seed), limit, extra)


def test_a_3x_pair_under_40_percent_noise_passes_1_5_and_fails_4():
    passed = verdict(3.0, 1.5)
    assert passed.decision.state == "pass"
    assert len(passed.rounds) == MIN_ROUNDS  # decided at the first look
    assert passed.decision.low >= 1.5
    failed = verdict(3.0, 4.0)
    assert failed.decision.state == "fail"
    assert failed.decision.high < 4.0


def test_a_1_05x_pair_fails_a_1_5x_limit():
    trial = verdict(1.05, 1.5)
    assert trial.decision.state == "fail"


def test_a_pair_at_the_limit_does_not_pass_more_than_the_error_rate():
    """The true ratio equals the limit: over many seeds, looking again after adding rounds must
    not let it pass more often than the 5% the bounds promise (Bonferroni over the looks)."""
    states = [verdict(1.5, 1.5, seed=seed).decision.state for seed in range(300)]
    assert states.count("pass") / len(states) <= 0.05
    assert states.count("inconclusive") > states.count("pass")  # mostly: not decidable


def test_a_pair_at_the_limit_extends_rounds_to_the_last_look():
    trial = verdict(1.5, 1.5, seed=1)
    if trial.decision.state == "inconclusive":
        assert len(trial.rounds) == looks(9)[-1]


def test_the_noise_hits_the_decision_not_the_truth():
    """A margin noise cannot overturn decides at once even at 40% noise; a thin one needs more
    rounds or stays undecided."""
    wide = verdict(3.1, 1.5)
    thin = verdict(1.65, 1.5, seed=3)
    assert len(wide.rounds) <= len(thin.rounds)


def test_decide_reads_bounds_from_an_exact_sign_test():
    ratios = [3.1, 2.9, 3.3, 2.7, 3.0, 3.2, 2.8]
    d = decide(ratios, 1.5, n_looks=1)
    # 7 ratios, 95% one-sided: the extreme order statistics (all 7 on one side: 1/128; six of
    # seven already has a tail of 8/128 > 5%).
    assert d.low == pytest.approx(2.7)
    assert d.high == pytest.approx(3.3)
    # 10 ratios: nine of ten has a tail of 11/1024 < 5%, so the second smallest bounds it.
    d = decide([*ratios, 2.6, 3.4, 3.5], 1.5, n_looks=1)
    assert d.low == pytest.approx(2.7)
    assert d.state == "pass"
    assert decide(ratios, 3.0, n_looks=1).state == "inconclusive"


def test_too_few_rounds_give_no_bound_and_no_verdict():
    d = decide([3.0, 3.1, 2.9], 1.5, n_looks=4)
    assert d.low is None and d.state == "inconclusive"


def test_the_rounds_alternate_which_side_runs_first():
    order = []

    def measure(side):
        order.append(side)
        return BASELINE_MS if side == "baseline" else 10.0

    run_trial(measure, 1.5, 0)
    assert order[:4] == ["baseline", "candidate", "candidate", "baseline"]


def test_looks_are_planned_from_the_extra_round_budget():
    assert looks(0) == [MIN_ROUNDS]
    assert looks(9) == [7, 10, 13, 16]
    assert looks(4) == [7, 10, 11]


def test_rounds_under_load_are_left_out_and_too_few_clean_ones_decide_nothing():
    """Load moves the ratio itself (PyTorch slowed 10x, ORT int8 5.5x under two burners per
    core): a round whose bare loop ran slower than LOAD_LIMIT x the bench's is not decided on."""
    quiet = 0.2
    clean = [Round(30.0, 10.0, quiet * 1.1) for _ in range(MIN_ROUNDS)]  # 3x, unloaded
    burdened = [Round(240.0, 44.0, quiet * 3) for _ in range(MIN_ROUNDS)]  # 5.5x under load
    bound = bare_bound(quiet)
    assert bound == pytest.approx(LOAD_LIMIT * quiet)
    d = decide_rounds(clean + burdened, bound, 4.0, n_looks=1)
    assert d.state == "fail" and d.median == pytest.approx(3.0)  # the load's 5.5x ignored
    assert decide_rounds(burdened, bound, 4.0, n_looks=1) is None
    # A looser load limit keeps the loaded rounds (and the load's wrong 5.5x passes 4x).
    assert decide_rounds(burdened, bare_bound(quiet, 4.0), 4.0, n_looks=1).state == "pass"
    # Without the bench's bare p50 there is nothing to tell load by: every round counts.
    assert decide_rounds(burdened, None, 4.0, n_looks=1).state == "pass"


def test_a_loaded_host_extends_to_the_last_look_and_gives_no_verdict():
    timed = {"baseline": 240.0, "candidate": 44.0, "bare": 0.2 * (LOAD_LIMIT + 1)}
    trial = run_trial(lambda side: timed[side], 3.57, 9, bare_bound_ms=bare_bound(0.2))
    assert trial.decision is None and len(trial.rounds) == looks(9)[-1]
