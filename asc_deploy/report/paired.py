"""An evaluation's stored paired comparison with the uncompressed model, and how it is written.

Its own module because both the tables and the bert-99 view (bert99.py, which the tables show)
read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asc_deploy.measure.statistics import SIGNIFICANCE
from asc_deploy.records import Evaluation

MISSING = "–"  # an absent value, in every table cell


def _signed(value: float) -> str:
    return f"{value:+.2f}"


@dataclass(frozen=True)
class Paired:
    """An evaluation's paired comparison with the uncompressed model (Evaluation.comparison;
    Evaluation.comparisons for a metric other than the primary).

    The comparison is measure/statistics.py's PairedComparison as a dict, either of the primary
    metric itself or keyed by metric name ({"exact": {...}, "f1": {...}} for QA)."""

    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    significant: bool | None

    @classmethod
    def of(cls, ev: Evaluation | None, metric: str) -> Paired | None:
        comparison: Mapping[str, Any] = (ev.comparison if ev else None) or {}
        if isinstance(comparison.get(metric), Mapping):
            comparison = comparison[metric]
        elif comparison.get("metric", metric) != metric:  # the primary's; another was asked
            comparison = (ev.comparisons or {}).get(metric) or {}
        if not comparison:
            return None
        lo, hi, p = comparison.get("ci_low"), comparison.get("ci_high"), comparison.get("p_value")
        significant = comparison.get("significant")
        if significant is None and p is not None:
            significant = p < SIGNIFICANCE
        if significant is None and lo is not None and hi is not None:
            significant = lo > 0 or hi < 0  # the 95% interval excludes no difference
        delta = comparison.get("delta", ev.delta)
        return cls(delta, lo, hi, p, significant)

    @classmethod
    def of_eval_holdout(cls, ev: Evaluation | None, metric: str) -> Paired | None:
        """The evaluation's eval-holdout comparison of `metric`, where it has one."""
        run = ev.eval_holdout if ev else None
        c = run.comparisons.get(metric) if run else None
        if c is None:
            return None
        return cls(c.delta, c.ci_low, c.ci_high, c.p_value, c.significant)

    def interval(self) -> str:
        """'-0.40 [-1.30, +0.50]', or just the delta when no interval was computed."""
        text = _signed(self.delta) if self.delta is not None else MISSING
        if self.ci_low is not None and self.ci_high is not None:
            text += f" [{_signed(self.ci_low)}, {_signed(self.ci_high)}]"
        return text

    def starred(self) -> str:
        """The interval, starred when significant (the tables' compact form)."""
        return self.interval() + ("*" if self.significant else "")

    def verdict(self) -> str:
        return {True: "significant", False: "not significant", None: ""}[self.significant]
