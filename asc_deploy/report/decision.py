"""Is an artifact within the accuracy budget? The rule the recommendation and the gate share.

`gates.decision` picks the number an artifact is judged on, per metric (the task's primary one
and each guarded one, SQuAD 2.0's HasAns_f1 and NoAns_f1), against the uncompressed model in
PyTorch on the same examples:

- "non-inferior" (the default): the one-sided 95% lower bound of the paired difference
  (`ni_low` of the evaluation's stored comparison; measure/statistics.py). An artifact is within
  a budget of B points when that bound is >= -B: at one-sided 95% confidence it loses at most B.
  A small evaluation set gives a wide bound, and then nothing compressed may be within budget:
  the set cannot show it safe, and the report says so.
- "point": the point difference (`Evaluation.delta`, `guarded_deltas`) >= -B, the rule before
  the bound was stored; it passes an artifact whatever the noise around its difference.

The reference evaluation itself (the uncompressed model in PyTorch) loses 0 by definition under
either rule. A comparison written before `ni_low` was stored has no bound: under "non-inferior"
that evaluation is *undecided*, never within budget (nothing shows it safe), and the gate and
the report name the missing field. Running `asc-deploy run` again on the same config (every
stage reused, the comparisons recomputed from the stored predictions), or `gates.decision:
point`, decides it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asc_deploy.config import Decision
from asc_deploy.measure.statistics import MINUS
from asc_deploy.records import Evaluation, Results

EPS = 1e-9  # a bound of exactly -budget is within budget despite float rounding
BOUND = "ni_low"  # the comparison field holding the one-sided lower bound


@dataclass(frozen=True)
class Judged:
    """What one evaluation is judged on: its worst metric under the rule."""

    metric: str
    delta: float  # the point difference on that metric (points, other - reference)
    bound: float | None  # the one-sided lower bound ("non-inferior"); None under "point"
    drop: float | None  # the points it is judged to lose; None: no bound stored (undecided)

    def within(self, budget: float) -> bool:
        return self.drop is not None and self.drop <= budget + EPS


def comparison_of(ev: Evaluation, metric: str) -> Mapping[str, Any] | None:
    """The stored paired comparison of `metric` (comparisons by name, else the primary's)."""
    by_name = (ev.comparisons or {}).get(metric)
    if by_name is not None:
        return by_name
    primary = ev.comparison or {}
    return primary if primary.get("metric") == metric else None


def bound_of(ev: Evaluation, metric: str) -> float | None:
    """The one-sided lower bound of `metric`'s difference; None when none is stored (or what is
    stored is not a finite number: the comparison is free-form JSON)."""
    bound = (comparison_of(ev, metric) or {}).get(BOUND)
    number = isinstance(bound, int | float) and not isinstance(bound, bool)
    return float(bound) if number and math.isfinite(bound) else None


def judge(results: Results, ev: Evaluation, decision: Decision) -> Judged | None:
    """`ev` judged under `decision`: its undecided metric if any, else its worst; None when it
    has no delta (no reference evaluation to compare with)."""
    if ev.delta is None:
        return None
    deltas = {results.task.primary_metric: ev.delta, **ev.guarded_deltas}
    reference = results.reference_evaluation()
    on_point = decision == "point" or (reference is not None and ev.key == reference.key)
    judged = [_judged(ev, metric, delta, on_point) for metric, delta in deltas.items()]
    undecided = [j for j in judged if j.drop is None]
    return undecided[0] if undecided else max(judged, key=lambda j: j.drop)


def _judged(ev: Evaluation, metric: str, delta: float, on_point: bool) -> Judged:
    # 0.0 - x, not -x: a zero difference is a drop of 0, never of -0.0
    if on_point:
        return Judged(metric, delta, None, 0.0 - delta)
    bound = bound_of(ev, metric)
    return Judged(metric, delta, bound, None if bound is None else 0.0 - bound)


def signed(value: float) -> str:
    """'−0.34', '+1.20', '0.00': two decimals and the report's typographic minus."""
    text = f"{value:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text.replace("-", MINUS)
