"""The speed gate's verdict on a noisy host: the pair measured back to back, round after round.

The bench's rounds (harness.py) time every cell once per round, so the gate's two cells sit
minutes apart inside a round and a shared VM's drift lands on one and not the other; on this
project's 2-core VM a bare loop spread 37% across rounds and the gate gave up on a 3.10x
artifact against a 1.5x limit. Here the candidate and the model it is compared with (the
uncompressed PyTorch model) are timed back to back in fresh worker processes, in an order that
alternates between rounds, and the verdict rests on the per-round ratios baseline p50 /
candidate p50:

- the exact sign test on the ratios (scipy.stats.quantile_test on their median) gives a
  one-sided lower and upper confidence bound on the median ratio: PASS when the lower bound is
  >= the limit, FAIL when the upper bound is < it;
- otherwise STEP more rounds, up to `max_extra_rounds`, and decide again; the error rate is split
  over the planned looks (Bonferroni), so looking again cannot make a pair whose true ratio is
  the limit pass more often than 1 - CONFIDENCE of the time;
- INCONCLUSIVE only when the bounds still straddle the limit after the last look.

The sign test assumes nothing about the noise's shape, only rounds that are independent, which
fresh processes make plausible. MIN_ROUNDS is the fewest rounds at which it can decide at all
with the error rate split over four looks (0.5^7 < 0.05 / 4).

Real load is not noise: it moves the ratio itself. With two CPU burners per core on the 2-core
VM, the uncompressed PyTorch model ran 10x slower and an int8 ORT artifact 5.5x slower (OpenMP's
spinning threads suffer most from oversubscription), so a 2.98x pair measured 5.5x and passed a
3.57x limit it fails on a quiet host. So every round also times the bench's bare loop
(measure/noise.py); a round whose bare p50 is more than `gates.load_limit` (LOAD_LIMIT, 1.5)
times the bare p50 the bench measured earlier in the run is *loaded*: it is kept in the record
but not in the ratios decided on, and a trial left with too few clean rounds is inconclusive,
never a verdict on what load did to the two runtimes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

CONFIDENCE = 0.95  # one-sided, over all looks together
MIN_ROUNDS = 7
STEP = 3  # rounds added before each further look
# The default gates.load_limit: a round whose bare loop runs this much slower than the bench's is
# loaded (two burners per core on the 2-core VM: 1.6-1.8x; niced background tests: up to 1.7x,
# while PyTorch slowed 10-60x and ORT int8 5-10x).
LOAD_LIMIT = 1.5
TEST = "exact sign test on per-round p50 ratios (scipy.stats.quantile_test), Bonferroni over looks"

State = Literal["pass", "fail", "inconclusive"]
Side = Literal["baseline", "candidate", "bare"]


@dataclass(frozen=True)
class Decision:
    state: State
    median: float
    low: float | None  # one-sided lower bound on the median ratio (None: too few rounds)
    high: float | None  # one-sided upper bound
    confidence: float  # of each bound, after the split over looks


def looks(max_extra_rounds: int) -> list[int]:
    """The round counts after which the verdict is decided: MIN_ROUNDS, then every STEP more,
    and the last at MIN_ROUNDS + max_extra_rounds."""
    last = MIN_ROUNDS + max_extra_rounds
    planned = list(range(MIN_ROUNDS, last + 1, STEP))
    return planned if planned[-1] == last else [*planned, last]


def decide(ratios: Sequence[float], limit: float, n_looks: int) -> Decision:
    """PASS / FAIL / INCONCLUSIVE for the median of `ratios` against `limit` at one look."""
    from scipy.stats import quantile_test

    x = np.asarray(ratios, dtype=float)
    confidence = 1 - (1 - CONFIDENCE) / n_looks
    low = _bound(quantile_test(x, q=limit, p=0.5, alternative="greater"), confidence, "low")
    high = _bound(quantile_test(x, q=limit, p=0.5, alternative="less"), confidence, "high")
    state: State = "inconclusive"
    if low is not None and low >= limit:
        state = "pass"
    elif high is not None and high < limit:
        state = "fail"
    return Decision(state, float(np.median(x)), low, high, round(confidence, 6))


def _bound(result, confidence: float, side: str) -> float | None:
    """A finite confidence bound, or None when the rounds are too few to give one."""
    value = float(getattr(result.confidence_interval(confidence), side))
    return value if np.isfinite(value) else None


@dataclass(frozen=True)
class Round:
    baseline_ms: float
    candidate_ms: float
    bare_ms: float | None  # the bare loop timed with the pair (None: not timed)


def clean_ratios(rounds: Sequence[Round], bare_bound_ms: float | None) -> list[float]:
    """baseline / candidate p50 of every round whose bare loop ran within `bare_bound_ms`."""
    return [r.baseline_ms / r.candidate_ms for r in rounds if not loaded(r, bare_bound_ms)]


def loaded(r: Round, bare_bound_ms: float | None) -> bool:
    """The round's bare loop ran slower than the bound (None: load is not judged)."""
    return bare_bound_ms is not None and r.bare_ms is not None and r.bare_ms > bare_bound_ms


def bare_bound(quiet_bare_ms: float | None, load_limit: float = LOAD_LIMIT) -> float | None:
    """The bare p50 above which a round is loaded: `load_limit` x the bench's."""
    return None if quiet_bare_ms is None else load_limit * quiet_bare_ms


def decide_rounds(
    rounds: Sequence[Round], bare_bound_ms: float | None, limit: float, n_looks: int
) -> Decision | None:
    """The decision on the clean rounds; None when fewer than MIN_ROUNDS are clean."""
    ratios = clean_ratios(rounds, bare_bound_ms)
    return decide(ratios, limit, n_looks) if len(ratios) >= MIN_ROUNDS else None


@dataclass(frozen=True)
class Trial:
    rounds: list[Round]
    looks: list[int]
    decision: Decision | None  # None: too few clean rounds


def run_trial(
    measure: Callable[[Side], float],
    limit: float,
    max_extra_rounds: int,
    bare_bound_ms: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> Trial:
    """Rounds of the bare loop, then `measure("baseline")` and `measure("candidate")` (each a
    p50 in ms; odd rounds time the candidate first) until a planned look decides on the clean
    rounds. Without `bare_bound_ms` the bare loop is not timed and no round counts as loaded."""
    plan = looks(max_extra_rounds)
    rounds: list[Round] = []
    decision = None
    for look in plan:
        while len(rounds) < look:
            rounds.append(_round(measure, len(rounds), bare_bound_ms is not None))
        decision = decide_rounds(rounds, bare_bound_ms, limit, len(plan))
        if progress:
            progress(_progress_line(rounds, bare_bound_ms, decision, limit))
        if decision is not None and decision.state != "inconclusive":
            break
    return Trial(rounds, plan, decision)


def _round(measure: Callable[[Side], float], index: int, with_bare: bool) -> Round:
    bare = measure("bare") if with_bare else None
    order: tuple[Side, Side] = (
        ("baseline", "candidate") if index % 2 == 0 else ("candidate", "baseline")
    )
    timed = {side: measure(side) for side in order}
    return Round(timed["baseline"], timed["candidate"], bare)


def _progress_line(
    rounds: list[Round], bare_bound_ms: float | None, d: Decision | None, limit: float
) -> str:
    busy = sum(loaded(r, bare_bound_ms) for r in rounds)
    head = f"speed trial: {len(rounds)} rounds ({busy} loaded)"
    if d is None:
        return f"{head}: too few clean rounds to decide vs {limit:g}x"
    bounds = f"[{_x(d.low)}, {_x(d.high)}]"
    return f"{head}, median {d.median:.2f}x {bounds} vs {limit:g}x: {d.state}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
