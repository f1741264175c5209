"""Is an artifact within the accuracy budget? The rule the recommendation and the gate share.

`gates.decision` picks the number an artifact is judged on, per metric (the task's primary one
and each guarded one, SQuAD 2.0's HasAns_f1 and NoAns_f1), against the uncompressed model in
PyTorch on the same examples:

- "non-inferior" (the default): the one-sided 95% lower bound of the paired difference
  (`ni_low` of the evaluation's stored comparison; measure/statistics.py). An artifact is within
  a budget of B points when that bound is >= -B: at one-sided 95% confidence it loses at most B.
  A small evaluation set gives a wide bound, and then nothing compressed may be within budget:
  the set cannot show it safe, and the report says so.
- "point": the point difference (`delta`, `guarded_deltas`) >= -B, the rule before
  the bound was stored; it passes an artifact whatever the noise around its difference.

Which examples: the eval holdout (`task.eval_holdout`, training examples nothing was trained on,
sized for the budget) when the run scored one, i.e. its reference evaluation carries an
`eval_holdout` run; else the evaluation split, as every results.json from before the setting. An
evaluation without an eval-holdout run in a run that has them has nothing to be judged on and is
never within budget. The evaluation split stays the published-comparable number beside it.

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


@dataclass(frozen=True)
class Scores:
    """The numbers one evaluation is decided on, on one set of examples."""

    delta: float | None  # primary metric, points vs the reference on the same examples
    guarded_deltas: Mapping[str, float]
    comparisons: Mapping[str, Mapping[str, Any]]  # metric -> the stored paired comparison


def on_eval_holdout(results: Results) -> bool:
    """Whether the decisions are taken on the eval holdout (the run scored one)."""
    reference = results.reference_evaluation()
    return reference is not None and reference.eval_holdout is not None


def scores(results: Results, ev: Evaluation) -> Scores:
    """`ev`'s numbers on the set the decisions are taken on (see the module docstring)."""
    if not on_eval_holdout(results):
        return split_scores(ev)
    run = ev.eval_holdout
    if run is None:
        return Scores(None, {}, {})
    comparisons = {metric: c.model_dump() for metric, c in run.comparisons.items()}
    return Scores(run.delta, run.guarded_deltas, comparisons)


def split_scores(ev: Evaluation) -> Scores:
    """`ev`'s numbers on the evaluation split (the published-comparable ones)."""
    comparisons = dict(ev.comparisons or {})
    primary = ev.comparison or {}
    if "metric" in primary:  # a file may hold the primary's comparison only
        comparisons.setdefault(primary["metric"], primary)
    return Scores(ev.delta, ev.guarded_deltas, comparisons)


def bound_of(numbers: Scores, metric: str) -> float | None:
    """The one-sided lower bound of `metric`'s difference; None when none is stored (or what is
    stored is not a finite number: the evaluation split's comparison is free-form JSON)."""
    bound = (numbers.comparisons.get(metric) or {}).get(BOUND)
    number = isinstance(bound, int | float) and not isinstance(bound, bool)
    return float(bound) if number and math.isfinite(bound) else None


def judge(results: Results, ev: Evaluation, decision: Decision) -> Judged | None:
    """`ev` judged under `decision`: its undecided metric if any, else its worst; None when it
    has no delta (no reference evaluation to compare with)."""
    numbers = scores(results, ev)
    if numbers.delta is None:
        return None
    deltas = {results.task.primary_metric: numbers.delta, **numbers.guarded_deltas}
    reference = results.reference_evaluation()
    on_point = decision == "point" or (reference is not None and ev.key == reference.key)
    judged = [_judged(numbers, metric, delta, on_point) for metric, delta in deltas.items()]
    undecided = [j for j in judged if j.drop is None]
    return undecided[0] if undecided else max(judged, key=lambda j: j.drop)


def _judged(numbers: Scores, metric: str, delta: float, on_point: bool) -> Judged:
    # 0.0 - x, not -x: a zero difference is a drop of 0, never of -0.0
    if on_point:
        return Judged(metric, delta, None, 0.0 - delta)
    bound = bound_of(numbers, metric)
    return Judged(metric, delta, bound, None if bound is None else 0.0 - bound)


def signed(value: float) -> str:
    """'−0.34', '+1.20', '0.00': two decimals and the report's typographic minus."""
    text = f"{value:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text.replace("-", MINUS)
