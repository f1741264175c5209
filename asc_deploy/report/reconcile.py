"""Refuse a results.json whose rows do not reconcile with what they came from.

`asc-deploy report` reads a file anyone can edit: an accuracy raised to 99.9 would otherwise
become the recommendation and pass the accuracy gate. Every evaluation's metrics are recomputed
from its own predictions file (and its batched and eval-holdout runs' from theirs), the rows
must name known, distinct models, and every bench row (merged --bench files too) must have timed
the graph its row was evaluated as; the first row that does not reconcile is one UserError
naming it.
"""

from __future__ import annotations

from pathlib import Path

from asc_deploy.errors import UserError
from asc_deploy.records import Evaluation, Results

TOLERANCE = 1e-4  # points: a metric recomputed from its predictions matches to float rounding


def reconcile(results: Results, source: str) -> None:
    """UserError naming the first row of `source` that does not reconcile."""
    _distinct_rows(results, source)
    for ev in results.evaluations:
        _matches_predictions(results, ev, source)
    _benched_these_artifacts(results, source)


def _benched_these_artifacts(results: Results, source: str) -> None:
    """A bench row must have timed the graph its (model, variant) was evaluated as: a bench
    file from another run's artifacts would otherwise lend this run its latencies."""
    for run in results.bench:
        for m in run.measurements:
            ev = results.evaluation(m.model, m.variant)
            if m.sha256 and ev is not None and ev.sha256 and m.sha256 != ev.sha256:
                host = run.host.hostname or run.host.fingerprint
                raise UserError(
                    f"{source}: bench row {m.model}/{m.variant} on {host} "
                    f"timed model.onnx {m.sha256[:12]}, but the evaluated artifact is "
                    f"{ev.sha256[:12]}; bench this run's artifacts"
                )


def _distinct_rows(results: Results, source: str) -> None:
    names = [m.name for m in results.models]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"{source}: model {name!r} is listed twice in models")
    keys = set()
    for ev in results.evaluations:
        if ev.model not in names:
            raise UserError(
                f"{source}: evaluation {ev.model}/{ev.variant} is of a model not in models"
            )
        if ev.key in keys:
            raise UserError(f"{source}: two evaluations of {ev.model}/{ev.variant}")
        keys.add(ev.key)


def _matches_predictions(results: Results, ev: Evaluation, source: str) -> None:
    from asc_deploy.tasks.evaluation import prediction_flips

    row = f"{source}: evaluation {ev.model}/{ev.variant}"
    metric = results.task.primary_metric
    if ev.primary != ev.metrics.get(metric):
        raise UserError(f"{row}: primary {ev.primary} is not its metrics' {metric}")
    served = _records(ev.predictions, row)
    _same_metrics(results, served, ev.metrics, ev.examples, f"{row} ({ev.predictions})")
    held = ev.eval_holdout
    if held is not None:  # what the decisions read: as checked as the evaluation split
        if held.primary != held.metrics.get(metric):
            raise UserError(
                f"{row} eval holdout: primary {held.primary} is not its metrics' {metric}"
            )
        where = f"{row} on the eval holdout ({held.predictions})"
        _same_metrics(results, _records(held.predictions, row), held.metrics, held.examples, where)
    if ev.batched is None:
        return
    batched = _records(ev.batched.predictions, f"{row} batched")
    where = f"{row} at batch {ev.batched.batch_size} ({ev.batched.predictions})"
    _same_metrics(results, batched, ev.batched.metrics, ev.examples, where)
    flips = prediction_flips(served, batched)
    if flips != ev.batched.flips:
        raise UserError(f"{where}: records {ev.batched.flips} flips, its predictions give {flips}")


def _records(path: str, row: str) -> list[dict]:
    from asc_deploy.tasks.evaluation import load_predictions

    if not Path(path).is_file():
        raise UserError(
            f"{row}: predictions file {path} not found; run the report where the run's evals/ "
            "folder is (its metrics are checked against it)"
        )
    return load_predictions(path)


def _same_metrics(
    results: Results, records: list[dict], metrics: dict[str, float], examples: int, where: str
) -> None:
    from asc_deploy.measure.statistics import per_example_scores

    if len(records) != examples:
        raise UserError(
            f"{where}: records {examples} examples, its predictions hold {len(records)}"
        )
    for name, scores in per_example_scores(records, results.task.family).items():
        if name not in metrics or not len(scores):
            continue
        recomputed = float(scores.mean())
        if abs(recomputed - metrics[name]) > TOLERANCE:
            raise UserError(
                f"{where}: records {name} {metrics[name]:.4g}, its predictions give "
                f"{recomputed:.4g}; the file was edited or belongs to another run"
            )
