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

from collections.abc import Mapping
from typing import Any

from asc_deploy.config import Decision, GatesConfig
from asc_deploy.measure.statistics import examples_for, minimal_detectable_drop
from asc_deploy.records import Measurement, Pick, Results
from asc_deploy.report import decision as D
from asc_deploy.report import results as R
from asc_deploy.report.gates import accuracy_phrase


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


# -- what the recommendation rests on -------------------------------------------------------------
def _host_picks(rec: Pick | None) -> dict[str, Pick]:
    """Host label ('' for a one-host run) -> that host's pick, picks without a model left out."""
    picks = rec.by_host if rec is not None and rec.by_host else {"": rec}
    return {label: p for label, p in picks.items() if p is not None and p.model}


def _name(pick: Pick) -> str:
    speedup = f", {pick.speedup:.2f}x" if pick.speedup is not None else ""
    return f"{pick.model} {pick.variant}{speedup}"


def _judged(results: Results, pick: Pick, decision: Decision) -> D.Judged:
    return D.judge(results, results.evaluation(pick.model, pick.variant), decision)


def _is_reference(results: Results, pick: Pick) -> bool:
    reference = results.reference_evaluation()
    return reference is not None and (pick.model, pick.variant) == reference.key


def _points(budget: float) -> str:
    return "1 point" if budget == 1 else f"{budget:g} points"


def _metric(results: Results, judged: D.Judged) -> str:
    """The metric named before a phrase: the primary's name, or the guarded one that decides."""
    return judged.metric if judged.metric != results.task.primary_metric else ""


def _on(results: Results) -> str:
    """Where the decisions were taken, when not on the evaluation split."""
    return " on the eval holdout" if D.on_eval_holdout(results) else ""


def _dev_beside(results: Results, pick: Pick) -> str:
    """The pick's difference on the evaluation split, beside one decided on the eval holdout."""
    if not D.on_eval_holdout(results) or _is_reference(results, pick):
        return ""
    ev = results.evaluation(pick.model, pick.variant)
    c = D.split_scores(ev).comparisons.get(results.task.primary_metric) or {}
    if "ci_low" not in c:
        return ""
    interval = f"{D.signed(c['delta'])} [95% CI {D.signed(c['ci_low'])}, {D.signed(c['ci_high'])}]"
    return f"; on the evaluation split (published-comparable): {interval}"


def basis_line(results: Results) -> str | None:
    """Which examples decided, and that nothing else read them; None on the evaluation split."""
    held = results.task.eval_holdout
    if not D.on_eval_holdout(results) or held is None:
        return None
    left_out = (
        f"; {held.withheld:,} more (fragments of them, or repeats) were kept from training too"
        if held.withheld
        else ""
    )
    return (
        f"Decided on the eval holdout: {held.examples:,} training examples that nothing was "
        f"trained, profiled, screened or calibrated on (task.eval_holdout){left_out}; overlap, "
        f"by id, text or fragment, with the training split {held.overlap_training} and with the "
        f"screening reserve {held.overlap_screening}; {held.shared_with_eval} share a text with "
        f"the evaluation split, whose {results.task.eval_examples:,} examples give the "
        "published-comparable numbers beside them"
    )


def decision_lines(results: Results, gates: GatesConfig) -> list[str]:
    """Per target and host: the rule the recommendation was decided on and the numbers that
    decided it; where the point rule would pick another artifact, that one and why it cannot be
    shown within the budget (its one-sided 95% lower bound). Decided on the eval holdout, which
    set decided comes first and the pick's evaluation-split difference beside its own."""
    budget = gates.accuracy_budget
    point = recommend(results, gates.model_copy(update={"decision": "point"}))
    basis = basis_line(results)
    lines = [basis] if basis and results.recommendation else []
    for provider, rec in results.recommendation.items():
        others = _host_picks(point.get(provider))
        for label, pick in _host_picks(rec).items():
            where = f"{provider} on {label}" if label else provider
            judged = _judged(results, pick, gates.decision)
            phrase = f"{_metric(results, judged)} {accuracy_phrase(judged, budget)}".strip()
            if gates.decision == "point":
                lines.append(_point_line(results, where, pick, phrase, budget))
                continue
            if _is_reference(results, pick):
                lines.append(
                    f"{where}: no faster artifact is shown within {_points(budget)} of the "
                    f"uncompressed model at one-sided 95%{_on(results)}, so {pick.model} "
                    f"{pick.variant} stays the recommendation"
                )
            else:
                lines.append(
                    f"{where}: {_name(pick)}, the fastest artifact shown non-inferior"
                    f"{_on(results)} (within {_points(budget)} at one-sided 95%): {phrase}"
                    + _dev_beside(results, pick)
                )
            unsafe = _unsafe_point_pick(results, pick, others.get(label), budget)
            if unsafe:
                lines.append(f"{where}: {unsafe}")
    return lines


def _unsafe_point_pick(results: Results, pick: Pick, other: Pick | None, budget: float) -> str:
    """Why the point rule's pick, where it is another artifact, is not the recommendation."""
    if other is None or (other.model, other.variant) == (pick.model, pick.variant):
        return ""
    judged = _judged(results, other, "non-inferior")
    if judged.within(budget):  # shown safe too, yet slower: nothing to explain
        return ""
    because = f"{_metric(results, judged)} {accuracy_phrase(judged, budget)}".strip()
    return (
        f"the point rule would pick {_name(other)}, but it cannot be shown within "
        f"{_points(budget)}: {because}"
    )


def _point_line(results: Results, where: str, pick: Pick, phrase: str, budget: float) -> str:
    """The point rule's pick, with what non-inferiority would say of it."""
    line = (
        f"{where}: {_name(pick)}, the fastest artifact whose point difference{_on(results)} is "
        f"within {_points(budget)} (gates.decision: point): {phrase}"
    )
    if _is_reference(results, pick):
        return line
    judged = _judged(results, pick, "non-inferior")
    if judged.bound is None:
        return line + "; no one-sided 95% lower bound is stored for it" + _dev_beside(results, pick)
    shown = "also shows" if judged.within(budget) else "cannot show"
    return (
        line + f"; its one-sided 95% lower bound {D.signed(judged.bound)} {shown} that it loses "
        f"at most {_points(budget)}" + _dev_beside(results, pick)
    )


def _in_question(results: Results, gates: GatesConfig) -> Pick | None:
    """The artifact whose drop the evaluation set must resolve: the first target's pick under
    the point rule (the fastest artifact a larger set could show safe), else the
    recommendation; never the uncompressed model itself."""
    point = recommend(results, gates.model_copy(update={"decision": "point"}))
    for rec in (point, results.recommendation):
        first = next(iter(rec.values()), None)
        if first is not None and first.model and not _is_reference(results, first):
            return first
    return None


def power_line(results: Results, gates: GatesConfig) -> str | None:
    """The smallest drop the set the decisions are taken on tells from 0 at one-sided 95%, for
    the artifact in question (statistics.minimal_detectable_drop: 1.645 * rms / sqrt(n), for
    right/wrong outcomes 1.645 * 100 * sqrt(p_disc / n) with p_disc the share of examples on
    which it and the uncompressed model disagree), against the accuracy budget; on the eval
    holdout, the evaluation split's beside it. None with nothing benched."""
    if not results.recommendation:
        return None
    pick = _in_question(results, gates)
    if pick is None:
        return "Power: no artifact other than the uncompressed model to size the evaluation set by"
    metric = results.task.primary_metric
    ev = results.evaluation(pick.model, pick.variant)
    comparison = D.scores(results, ev).comparisons.get(metric) or {}
    rms, n = comparison.get("rms_difference"), comparison.get("n")
    name = f"{pick.model} {pick.variant}"
    if rms is None or not n:
        return (
            f"Power: not computed: the comparison of {name} has no rms_difference (this "
            "results.json predates it); re-run `asc-deploy run` on its config"
        )
    budget = gates.accuracy_budget
    examples = "eval-holdout examples" if D.on_eval_holdout(results) else "evaluation examples"
    drop = minimal_detectable_drop(rms, n)
    side = "below" if drop < budget else "not below"
    line = f"Power ({metric}): {_power_how(name, metric, comparison, examples)}, {side} the "
    line += f"{budget:g}-point budget" + _split_power(results, ev, metric)
    if budget > 0 and rms > 0:
        needed = examples_for(budget, rms)
        line += (
            f"; at this disagreement a set of about {needed:,} examples tells a {budget:g}-point "
            "drop from 0"
        )
    return line


def _power_how(name: str, metric: str, comparison: Mapping[str, Any], examples: str) -> str:
    """How the smallest detectable drop follows from the disagreement, in numbers."""
    rms, n = comparison["rms_difference"], comparison["n"]
    drop = minimal_detectable_drop(rms, n)
    discordant = comparison.get("discordant")
    if discordant is not None:
        share = (discordant["b"] + discordant["c"]) / n
        return (
            f"{name} and the uncompressed model differ in correctness (McNemar's discordant "
            f"pairs) on {share:.1%} of the {n} {examples}, so the smallest drop the set "
            f"tells from 0 at one-sided 95% is "
            f"1.645 × 100 × √({share:.4f} / {n}) = {drop:.2f} points"
        )
    return (
        f"the per-example {metric} differences of {name} from the uncompressed model have a "
        f"root mean square of {rms:.1f} points over the {n} {examples}, so the "
        f"smallest drop the set tells from 0 at one-sided 95% is 1.645 × {rms:.1f} / "
        f"√{n} = {drop:.2f} points"
    )


def _split_power(results: Results, ev, metric: str) -> str:
    """Beside a power decided on the eval holdout: what the evaluation split alone resolves."""
    if not D.on_eval_holdout(results):
        return ""
    c = D.split_scores(ev).comparisons.get(metric) or {}
    if not c.get("n") or c.get("rms_difference") is None:
        return ""
    drop = minimal_detectable_drop(c["rms_difference"], c["n"])
    return f" (the evaluation split's {c['n']} examples alone: {drop:.2f} points)"
