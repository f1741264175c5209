"""The bert-99 view: each int8 artifact's accuracy as a share of the same model's fp32 one.

MLPerf Inference accepts an int8 BERT when it keeps at least 99% of the fp32 accuracy
("bert-99"). Per int8 evaluation (int8-dynamic, int8-static, int8-mixed, ..., and PyTorch's
torch-dynamic-int8) this module finds the same model's fp32 counterpart (the fp32 ONNX artifact;
PyTorch fp32 for the PyTorch int8 model) and gives:

- `percent`: int8 metric / fp32 metric x 100, and whether it reaches 99;
- the paired difference int8 - fp32 in points with its 95% bootstrap interval, computed by
  measure/statistics.py from both evaluations' per-example predictions (predictions.jsonl);
  used only when those files still describe the recorded metrics (each side's per-example mean
  equals its stored metric).

When the predictions cannot be read (a results.json moved to another machine, files removed or
rewritten since), the interval shown is the one the run stored in `Evaluation.comparison`:
int8 against the uncompressed model in PyTorch, and `paired_with` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from asc_deploy.errors import UserError
from asc_deploy.records import Evaluation, Results
from asc_deploy.report.paired import Paired

BERT99 = 99.0  # MLPerf's accuracy target for int8 BERT: 99% of fp32
MATCH = 1e-6  # points: predictions that reproduce the stored metric describe the same run


@dataclass(frozen=True)
class Int8Share:
    model: str
    variant: str
    fp32_variant: str
    int8: float
    fp32: float
    percent: float
    paired_with: Literal["fp32", "reference"] | None  # None: no interval at all
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    significant: bool | None = None

    @property
    def passed(self) -> bool:
        return self.percent >= BERT99


def is_int8(variant: str) -> bool:
    return "int8" in variant


def fp32_counterpart(ev: Evaluation) -> str:
    """The variant an int8 evaluation is held against: its runtime's fp32."""
    return "torch" if ev.runtime == "torch" else "fp32"


def int8_share(results: Results, ev: Evaluation) -> Int8Share | None:
    """The bert-99 numbers of one int8 evaluation; None when it is not int8 or either metric
    (or the fp32 one's non-zero value) is missing."""
    if not is_int8(ev.variant) or ev.primary is None:
        return None
    fp32 = results.evaluation(ev.model, fp32_counterpart(ev))
    if fp32 is None or not fp32.primary:
        return None
    percent = 100.0 * ev.primary / fp32.primary
    base = dict(
        model=ev.model,
        variant=ev.variant,
        fp32_variant=fp32.variant,
        int8=ev.primary,
        fp32=fp32.primary,
        percent=percent,
    )
    stats = _paired_with_fp32(results, fp32, ev)
    if stats is not None:
        return Int8Share(**base, paired_with="fp32", **stats)
    stored = Paired.of(ev, results.task.primary_metric)
    if stored is None:
        return Int8Share(**base, paired_with=None)
    return Int8Share(
        **base,
        paired_with="reference",
        delta=stored.delta,
        ci_low=stored.ci_low,
        ci_high=stored.ci_high,
        p_value=stored.p_value,
        significant=stored.significant,
    )


def _paired_with_fp32(results: Results, fp32: Evaluation, int8: Evaluation) -> dict | None:
    """Paired statistics of int8 - fp32 from the stored predictions, or None where they are
    unreadable or no longer match the recorded metrics."""
    from asc_deploy.measure.statistics import compare_prediction_files

    paths = [Path(fp32.predictions), Path(int8.predictions)]
    if not all(p.is_file() for p in paths):
        return None
    metric = results.task.primary_metric
    try:
        stats = compare_prediction_files(*paths, results.task.family).get(metric)
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return None
    if stats is None or stats.n != int8.examples:
        return None
    if abs(stats.reference - fp32.primary) > MATCH or abs(stats.other - int8.primary) > MATCH:
        return None  # the files were rewritten since these metrics were recorded
    return dict(
        delta=stats.delta,
        ci_low=stats.ci_low,
        ci_high=stats.ci_high,
        p_value=stats.p_value,
        significant=stats.significant,
    )


def int8_shares(results: Results) -> dict[tuple[str, str], Int8Share]:
    """(model, variant) -> its bert-99 numbers, for every int8 evaluation that has them."""
    shares = {}
    for ev in results.evaluations:
        share = int8_share(results, ev)
        if share is not None:
            shares[ev.key] = share
    return shares
