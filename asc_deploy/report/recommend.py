"""The recommendation: the fastest artifact within the accuracy budget on each target provider.

For every host and provider, candidates are the evaluated (model, variant) artifacts measured at
the gate shape (GatesConfig.speedup_shape) that are within GatesConfig.accuracy_budget points of
the uncompressed PyTorch model on the primary metric and each of the task's guarded metrics
(SQuAD 2.0: HasAns_f1 and NoAns_f1), under GatesConfig.decision (report/decision.py): by default
non-inferior, the one-sided 95% lower bound of the paired difference >= -budget; the lowest p50
wins. The uncompressed PyTorch model loses nothing against itself, so it is always a candidate
and a pick exists whenever it was measured.
Latencies from different hosts are never compared: `recommendation[provider]` is the pick on
the first host that measured that provider (the run's own host comes first in `bench`), and
`by_host` holds every host's pick when more than one host measured it.
"""

from __future__ import annotations

from asc_deploy.config import Decision, GatesConfig
from asc_deploy.records import Measurement, Pick, Results
from asc_deploy.report import decision as D
from asc_deploy.report import results as R


def _pick(
    results: Results, candidates: list[Measurement], index: R.MeasurementIndex
) -> Pick | None:
    best = min(candidates, key=lambda m: m.latency_ms.p50, default=None)
    if best is None:
        return None
    ev = results.evaluation(best.model, best.variant)
    return Pick(
        model=best.model,
        variant=best.variant,
        primary=ev.primary,
        delta=ev.delta,
        p50_ms=best.latency_ms.p50,
        p95_ms=best.latency_ms.p95,
        speedup=R.speedup(results, best, index),
        size_bytes=ev.size_bytes or best.size_bytes,
        artifact=best.artifact,
        host=best.host,
        host_label=best.host_label,
        batch=best.batch,
        sequence=best.sequence,
    )


def within_budget(
    results: Results, budget: float, decision: Decision = "non-inferior"
) -> set[R.Key]:
    """(model, variant) pairs judged to lose no more than `budget` points against the reference
    under `decision`, on the primary metric and on each of the task's guarded ones."""
    return {
        ev.key
        for ev in results.evaluations
        if (judged := D.judge(results, ev, decision)) is not None and judged.within(budget)
    }


def recommend(results: Results, gates: GatesConfig) -> dict[str, Pick]:
    """Provider -> the pick (see the module docstring); a provider with no candidate at the
    gate shape gets a Pick with model None and the reason."""
    batch, sequence = gates.speedup_shape
    eligible = within_budget(results, gates.accuracy_budget, gates.decision)
    index = R.measurement_index(results)
    per_host: dict[str, dict[str, list[Measurement]]] = {}
    for m in R.measurements(results):
        bucket = per_host.setdefault(m.provider, {}).setdefault(m.host_label, [])
        if m.shape == (batch, sequence) and (m.model, m.variant) in eligible and m.latency_ms.p50:
            bucket.append(m)
    out: dict[str, Pick] = {}
    for provider, by_host in per_host.items():
        picks = {label: _pick(results, cands, index) for label, cands in by_host.items()}
        first = next(iter(picks.values())) or Pick(
            model=None,
            variant=None,
            reason=(
                f"no artifact within {gates.accuracy_budget:g} points was measured on "
                f"{provider} at {batch}x{sequence}"
            ),
        )
        out[provider] = first.model_copy(update={"by_host": picks}) if len(picks) > 1 else first
    return out
