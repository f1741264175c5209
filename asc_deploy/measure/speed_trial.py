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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

CONFIDENCE = 0.95  # one-sided, over all looks together
MIN_ROUNDS = 7
STEP = 3  # rounds added before each further look
TEST = "exact sign test on per-round p50 ratios (scipy.stats.quantile_test), Bonferroni over looks"

State = Literal["pass", "fail", "inconclusive"]
Side = Literal["baseline", "candidate"]


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
class Trial:
    pairs_ms: list[tuple[float, float]]  # (baseline p50, candidate p50) per round
    looks: list[int]
    decision: Decision

    @property
    def ratios(self) -> list[float]:
        return ratios(self.pairs_ms)


def ratios(pairs_ms: Sequence[tuple[float, float]]) -> list[float]:
    return [base / cand for base, cand in pairs_ms]


def run_trial(
    measure: Callable[[Side], float],
    limit: float,
    max_extra_rounds: int,
    progress: Callable[[str], None] | None = None,
) -> Trial:
    """Rounds of `measure("baseline")` and `measure("candidate")` (each a p50 in ms) until a
    planned look decides; odd rounds time the candidate first."""
    plan = looks(max_extra_rounds)
    pairs: list[tuple[float, float]] = []
    decision = None
    for look in plan:
        while len(pairs) < look:
            order: tuple[Side, Side] = (
                ("baseline", "candidate") if len(pairs) % 2 == 0 else ("candidate", "baseline")
            )
            timed = {side: measure(side) for side in order}
            pairs.append((timed["baseline"], timed["candidate"]))
        decision = decide(ratios(pairs), limit, len(plan))
        if progress:
            progress(_progress_line(len(pairs), decision, limit))
        if decision.state != "inconclusive":
            break
    assert decision is not None  # looks() always plans at least one look
    return Trial(pairs, plan, decision)


def _progress_line(rounds: int, d: Decision, limit: float) -> str:
    bounds = f"[{_x(d.low)}, {_x(d.high)}]"
    return f"speed trial: {rounds} rounds, median {d.median:.2f}x {bounds} vs {limit:g}x: {d.state}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
