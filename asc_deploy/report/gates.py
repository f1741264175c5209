"""Release gates: each configured limit in GatesConfig becomes {name, passed, value, limit, reason}.

What each gate checks:
- max_accuracy_drop (points): by default the recommended artifact of every target provider (the
  artifact that would ship); with scope "asc", every evaluated ASC artifact (every variant of
  every kind-'asc' model) as well, which catches a quantisation that broke an artifact nobody
  picked. Strategy baselines and off-the-shelf models are comparisons, never gated. Judged on
  the eval holdout when the run scored one (task.eval_holdout), else on the evaluation split.
- min_speedup: the recommended artifact on `speedup_target` at `speedup_shape`, on every host
  that measured it, against the uncompressed PyTorch model on the same host. Where `run` timed
  the pair back to back (results.speed_trials, measure/speed_trial.py), the gate decides on
  the exact sign test's one-sided 95% bounds on the median per-round ratio: PASS when the lower
  bound reaches the limit, FAIL when the upper bound is below it, else *inconclusive*; a busy
  host is reported, not a veto. Without a trial (a results.json from before them, cluster
  targets), the bench's cells decide: when either is still noisy after the bench re-measured
  it, only if every pairing of their round p50s lands on the same side of the limit (its value
  is then the pairing nearest the limit); otherwise, or when the host itself was busy (its bare
  session.run loop spread too much), it is *inconclusive*: never PASS on a number noise could
  overturn.
- max_latency_regression (fraction): every measurement that the baseline results.json also has
  (same model/variant/provider/batch/sequence, and the same host when the baseline has any
  measurement from one of our hosts); noisy measurements on either side are skipped.
- max_size_mb (MB = 10^6 bytes): the recommended artifacts (scope "asc": every ASC artifact too).
- min_qps_at_bound: the recommended artifact on its provider, on every host that ran LoadGen's
  Server scenario: its VALID QPS at p99 <= the bound reaches min_qps, or min_ratio times the
  uncompressed model's (PyTorch when served). A missing or INVALID Server result fails.
Gates left unset (None) are not reported. A gate with nothing to check fails, saying why: a
release gate that silently passes on missing data is worse than none.

Exit codes of `run` and `report`: 0 every gate passed, 1 a gate failed, 3 none failed but one
was inconclusive (2 is a user error).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from asc_deploy.config import Decision, GatesConfig, QpsGateConfig
from asc_deploy.errors import UserError
from asc_deploy.measure.scenarios import check_min_qps, reference_variant
from asc_deploy.measure.speed_trial import bare_bound, decide_rounds, loaded
from asc_deploy.measure.statistics import MINUS
from asc_deploy.records import (
    BenchRun,
    Evaluation,
    Gate,
    Measurement,
    Pick,
    Results,
    SpeedTrial,
    host_label,
    load_results,
)
from asc_deploy.report import decision as D
from asc_deploy.report import results as R

Scope = Literal["recommended", "asc"]
EPS = 1e-9
EXIT_FAILED, EXIT_INCONCLUSIVE = 1, 3


def gates_config(results: Results) -> GatesConfig:
    """The `gates:` section of the run config stored in results.json (defaults if absent)."""
    raw = results.run.config.get("gates") or {}
    try:
        return GatesConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise UserError(f"results.json run.config.gates.{key}: {first['msg']}") from exc


def load_baseline(config: GatesConfig, explicit: str | Path | None = None) -> Results | None:
    """The release-baseline results.json: `explicit` (--baseline) wins over gates.baseline."""
    path = explicit or config.baseline
    return load_results(path) if path else None


def fmt_limit(value: float) -> str:
    """A configured limit as the user wrote it, with at least one decimal (1 -> 1.0)."""
    text = f"{value:g}"
    return text if any(c in text for c in ".e") else text + ".0"


def _label(item: R.Item) -> str:
    return f"{item.model} {item.variant}"


def _picks(recommendation: dict[str, Pick]) -> list[Pick]:
    """Every host's pick for every provider, without repeats."""
    out: list[Pick] = []
    for rec in recommendation.values():
        for pick in (rec.by_host or {"_": rec}).values():
            if pick is not None and pick.model and pick not in out:
                out.append(pick)
    return out


def _nothing(scope: Scope) -> str:
    if scope == "recommended":
        return (
            "no recommended artifact: nothing within the accuracy budget measured at the gate shape"
        )
    return "no recommended or ASC artifact evaluated"


def _scoped_evaluations(
    results: Results, recommendation: dict[str, Pick], scope: Scope
) -> list[Evaluation]:
    keys = {(p.model, p.variant) for p in _picks(recommendation)}
    if scope == "asc":
        asc = {m.name for m in results.models if m.kind == "asc"}
        keys |= {e.key for e in results.evaluations if e.model in asc}
    return R.evaluations_of(results, sorted(keys))


def accuracy_gate(
    results: Results,
    recommendation: dict[str, Pick],
    limit: float,
    scope: Scope,
    decision: Decision = "non-inferior",
) -> Gate:
    """Passes when every scoped artifact is within `limit` points under `decision`
    (report/decision.py, the recommendation's rule, on its examples: the eval holdout when the
    run scored one); the worst one decides. Its value is the drop it is judged on: at the
    one-sided 95% lower bound ("non-inferior"), or at the point estimate ("point"). An artifact
    with no stored bound is undecided and fails, named."""
    judged = [
        (j, e)
        for e in _scoped_evaluations(results, recommendation, scope)
        if (j := D.judge(results, e, decision)) is not None
    ]
    if not judged:
        return Gate(
            name="max_accuracy_drop", passed=False, value=None, limit=limit, reason=_nothing(scope)
        )
    worst, ev = max(judged, key=lambda t: (t[0].drop is None, t[0].drop or 0.0))
    if decision == "point":
        reason = _point_reason(_label(ev), worst, results.task.primary_metric, limit)
    else:
        on = "" if worst.metric == results.task.primary_metric else f" {worst.metric}"
        reason = f"{_label(ev)}{on}: {accuracy_phrase(worst, limit)}"
    if D.on_eval_holdout(results):
        reason += " on the eval holdout"
    value = None if worst.drop is None else round(worst.drop, 4)
    return Gate(
        name="max_accuracy_drop",
        passed=worst.within(limit),
        value=value,
        limit=limit,
        reason=reason,
    )


def accuracy_phrase(judged: D.Judged, limit: float) -> str:
    """'−0.34 [one-sided 95% lower bound −1.52] < −1.0' (a bound), '−0.34 ≥ −1.0' (a point
    difference), or why there is no bound."""
    if judged.drop is None:
        return (
            f"no one-sided 95% lower bound stored for {judged.metric} (comparison field "
            f"{D.BOUND}; this results.json predates it): re-run `asc-deploy run` on its config "
            "(stages are reused, comparisons recomputed), or set gates.decision: point"
        )
    shown = D.signed(judged.delta)
    if judged.bound is not None:
        shown += f" [one-sided 95% lower bound {D.signed(judged.bound)}]"
    verb = "≥" if judged.within(limit) else "<"
    threshold = fmt_limit(limit) if limit == 0 else MINUS + fmt_limit(limit)
    return f"{shown} {verb} {threshold}"


def _point_reason(label: str, worst: D.Judged, primary: str, limit: float) -> str:
    """The point rule's reason: 'asc-0.90 torch drops 3.0 points > 1.0'."""
    if worst.drop < 0:  # an improvement: say so rather than "drops -0.5"
        return f"{label} gains {fmt_limit(round(-worst.drop, 2))} points (limit {fmt_limit(limit)})"
    verb = "<=" if worst.within(limit) else ">"
    on = "" if worst.metric == primary else f" of {worst.metric}"  # a guarded metric: name it
    return f"{label} drops {fmt_limit(round(worst.drop, 2))} points{on} {verb} {fmt_limit(limit)}"


def speedup_gate(results: Results, recommendation: dict[str, Pick], config: GatesConfig) -> Gate:
    target, (batch, sequence), limit = (
        config.speedup_target,
        config.speedup_shape,
        config.min_speedup,
    )
    rec = recommendation.get(target)
    chosen = [p for p in (rec.by_host or {"_": rec}).values() if p and p.model] if rec else []
    shape = f"{target} {batch}x{sequence}"

    def gate(passed: bool, value: float | None, reason: str) -> Gate:
        return Gate(name="min_speedup", passed=passed, value=value, limit=limit, reason=reason)

    if not chosen:
        return gate(False, None, f"no artifact measured on {shape}")
    missing = [p for p in chosen if p.speedup is None]
    if missing:
        return gate(
            False, None, f"no uncompressed PyTorch measurement on {shape} ({missing[0].host_label})"
        )
    judged = [_judge_speedup(results, p, target, limit, shape, len(chosen) > 1) for p in chosen]
    # A conclusive failure decides; else an inconclusive host; else the smallest margin.
    rank = {"fail": 0, "inconclusive": 1, "pass": 2}
    state, value, reason = min(judged, key=lambda j: (rank[j[0]], j[1]))
    return Gate(
        name="min_speedup",
        passed=state == "pass",
        inconclusive=state == "inconclusive",
        value=round(value, 4),
        limit=limit,
        reason=reason,
    )


def _judge_speedup(
    results: Results, pick: Pick, provider: str, limit: float, shape: str, many: bool
) -> tuple[str, float, str]:
    """("pass" | "fail" | "inconclusive", the speedup it rests on, the reason) for one pick.

    Clean measurements decide on the pooled p50s. A noisy cell (after the bench re-measured it)
    decides only when every pairing of the baseline's and the pick's round p50s falls on the same
    side of the limit, and the gate's value is then the pairing nearest the limit: the noise
    cannot overturn it. A busy host decides nothing.
    """
    host = f" on {pick.host_label}" if many else ""
    said = f"{_label(pick)} is {pick.speedup:.2f}x on {shape}{host}"
    quiet = "; re-run the bench on a quiet machine"
    run = next((r for r in results.bench if r.host.fingerprint == pick.host), None)
    trial = results.speed_trial(pick, provider)
    if trial is not None:
        return _judge_trial(trial, limit, said, run, pick.speedup)
    if run is not None and (run.noise or {}).get("host_busy"):
        doubt = f"the host was busy (bare session.run loop spread {run.noise['floor']:.0%})"
        return "inconclusive", pick.speedup, f"{said}, but {doubt}{quiet}"
    index = R.measurement_index(results)
    mine = index.get((pick.host, pick.model, pick.variant, provider, pick.batch, pick.sequence))
    base = R.baseline_measurement(results, mine, index) if mine else None
    noisy = [m for m in (base, mine) if m is not None and m.noisy]
    if not noisy:
        passed = pick.speedup >= limit - EPS
        verb = ">=" if passed else "<"
        return ("pass" if passed else "fail"), pick.speedup, f"{said} {verb} {fmt_limit(limit)}x"
    low = min(base.round_p50_ms) / max(mine.round_p50_ms)
    high = max(base.round_p50_ms) / min(mine.round_p50_ms)
    doubt = ", ".join(f"{m.model} {m.variant} round spread {m.round_spread:.0%}" for m in noisy)
    rounds = f"{said}, measured noisy ({doubt}); its rounds pair to {low:.2f}x-{high:.2f}x"
    if low >= limit - EPS:
        return "pass", low, f"{rounds}, all >= {fmt_limit(limit)}x"
    if high < limit - EPS:
        return "fail", high, f"{rounds}, all < {fmt_limit(limit)}x"
    return "inconclusive", pick.speedup, f"{rounds}, on both sides of {fmt_limit(limit)}x{quiet}"


def _judge_trial(
    trial: SpeedTrial, limit: float, said: str, run: BenchRun | None, speedup: float
) -> tuple[str, float, str]:
    """The verdict of the pair's back-to-back rounds (measure/speed_trial.py): the exact sign
    test's bounds on the median ratio of the rounds the host was not loaded in. The busy-host
    floor is reported beside it, but no longer vetoes what the paired bounds settle."""
    bound = bare_bound(trial.quiet_bare_ms, trial.load_limit)
    d = decide_rounds(trial.rounds, bound, limit, len(trial.looks))
    busy = sum(loaded(r, bound) for r in trial.rounds)
    text = (
        f"{said}; timed back to back with {trial.baseline} {trial.baseline_variant} in "
        f"{len(trial.rounds)} rounds"
    )
    if busy:
        text += f" ({busy} loaded: bare loop over {trial.load_limit:g}x the bench's, left out)"
    floor = (run.noise or {}).get("floor") if run is not None else None
    if floor is not None and (run.noise or {}).get("host_busy"):
        text += f" (the host was busy in the bench: bare loop spread {floor:.0%})"
    if d is None:
        return (
            "inconclusive",
            speedup,
            (
                f"{text}; too few rounds without load to decide (re-run on a machine without "
                "other work)"
            ),
        )
    text += f": median {d.median:.2f}x, one-sided 95% bounds [{_times(d.low)}, {_times(d.high)}]"
    limit_x = f"{fmt_limit(limit)}x"
    if d.state == "pass":
        return "pass", d.low, f"{text}; lower bound >= {limit_x}"
    if d.state == "fail":
        return "fail", d.high, f"{text}; upper bound < {limit_x}"
    return (
        "inconclusive",
        d.median,
        (
            f"{text}; the bounds straddle {limit_x} after the last planned round (raise "
            "gates.max_extra_rounds or re-run on a quieter machine)"
        ),
    )


def _times(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}x"


def _baseline_pairs(
    results: Results, baseline: Results
) -> tuple[list[tuple[Measurement, Measurement]], bool]:
    """(current, baseline) measurement pairs, and whether they were matched across hosts."""
    now = [m for m in R.measurements(results) if not m.noisy and m.latency_ms.p50]
    base = [m for m in R.measurements(baseline) if not m.noisy and m.latency_ms.p50]
    cross_host = not ({m.host for m in now} & {m.host for m in base})
    # Across hosts, match on everything but the host.
    key = (lambda m: m.key[1:]) if cross_host else (lambda m: m.key)
    index = {key(m): m for m in base}
    return [(m, index[key(m)]) for m in now if key(m) in index], cross_host


def regression_gate(results: Results, baseline: Results | None, limit: float) -> Gate:
    def gate(passed: bool, value: float | None, reason: str) -> Gate:
        return Gate(
            name="max_latency_regression", passed=passed, value=value, limit=limit, reason=reason
        )

    if baseline is None:
        return gate(
            False, None, "no baseline results.json given (set gates.baseline or pass --baseline)"
        )
    pairs, cross_host = _baseline_pairs(results, baseline)
    if not pairs:
        return gate(False, None, "no measurement matches one in the baseline")
    ratio, m, b = max(
        ((m.latency_ms.p50 / b.latency_ms.p50 - 1, m, b) for m, b in pairs), key=lambda t: t[0]
    )
    passed = ratio <= limit + EPS
    verb = "<=" if passed else ">"
    reason = (
        f"{_label(m)} {m.provider} {m.batch}x{m.sequence} p50 {m.latency_ms.p50:.2f} ms vs "
        f"{b.latency_ms.p50:.2f} ms baseline ({ratio:+.0%} {verb} {limit:.0%})"
    )
    if cross_host:
        reason += " (baseline measured on a different host)"
    return gate(passed, round(ratio, 4), reason)


def size_gate(
    results: Results, recommendation: dict[str, Pick], limit: float, scope: Scope
) -> Gate:
    sized = [
        (e.size_bytes / 1e6, e)
        for e in _scoped_evaluations(results, recommendation, scope)
        if e.size_bytes
    ]
    if not sized:
        return Gate(
            name="max_size_mb",
            passed=False,
            value=None,
            limit=limit,
            reason=_nothing(scope) + " with a known size",
        )
    size, worst = max(sized, key=lambda s: s[0])
    passed = size <= limit + EPS
    verb = "<=" if passed else ">"
    reason = f"{_label(worst)} is {size:.1f} MB {verb} {fmt_limit(limit)} MB"
    return Gate(name="max_size_mb", passed=passed, value=round(size, 3), limit=limit, reason=reason)


def qps_gate(results: Results, recommendation: dict[str, Pick], config: QpsGateConfig) -> Gate:
    """The worst host's verdict: every host that served Server must reach the limit."""
    limit = config.min_qps if config.min_ratio is None else config.min_ratio
    rec = recommendation.get(config.provider)
    served = [run for run in results.bench if any(r["scenario"] == "Server" for r in run.scenarios)]
    if rec is None or not served:
        what = "no recommended artifact" if rec is None else "no Server scenario measured"
        reason = f"{what} on {config.provider}"
        return Gate(name="min_qps_at_bound", passed=False, value=None, limit=limit, reason=reason)
    reference = results.reference().name
    verdicts = []
    for run in served:
        pick = (rec.by_host or {}).get(host_label(run.host), rec)
        if pick is None or not pick.model:
            continue
        variant = reference_variant(run.scenarios, reference, config.provider)
        verdict = check_min_qps(
            run.scenarios,
            (pick.model, pick.variant),
            config.provider,
            config.latency_bound_ms,
            min_qps=config.min_qps,
            min_ratio=config.min_ratio,
            reference=(reference, variant),
        )
        if len(served) > 1:
            verdict["reason"] += f" on {host_label(run.host)}"
        verdicts.append(verdict)
    if not verdicts:
        reason = f"no recommended artifact on {config.provider}"
        return Gate(name="min_qps_at_bound", passed=False, value=None, limit=limit, reason=reason)
    # The failing host first, else the one with the least margin.
    worst = min(verdicts, key=lambda v: (v["passed"], v["value"] or 0.0))
    return Gate.model_validate(worst)


def evaluate_gates(
    results: Results,
    config: GatesConfig,
    recommendation: dict[str, Pick],
    baseline: Results | None = None,
    scope: Scope = "recommended",
) -> list[Gate]:
    """Every configured gate, in a fixed order."""
    gates = []
    if config.max_accuracy_drop is not None:
        gates.append(
            accuracy_gate(results, recommendation, config.max_accuracy_drop, scope, config.decision)
        )
    if config.min_speedup is not None:
        gates.append(speedup_gate(results, recommendation, config))
    if config.max_latency_regression is not None:
        gates.append(regression_gate(results, baseline, config.max_latency_regression))
    if config.max_size_mb is not None:
        gates.append(size_gate(results, recommendation, config.max_size_mb, scope))
    if config.min_qps_at_bound is not None:
        gates.append(qps_gate(results, recommendation, config.min_qps_at_bound))
    return gates


def failure_lines(gates: Iterable[Gate]) -> list[str]:
    """One line per gate that did not pass, as the CLI prints them."""
    return [
        f"gate {g.name} {'inconclusive' if g.inconclusive else 'failed'}: {g.reason}"
        for g in gates
        if not g.passed
    ]


def exit_code(gates: Iterable[Gate]) -> int:
    """0 all passed, EXIT_FAILED when one failed, else EXIT_INCONCLUSIVE when one was."""
    gates = list(gates)
    if any(not g.passed and not g.inconclusive for g in gates):
        return EXIT_FAILED
    return EXIT_INCONCLUSIVE if any(g.inconclusive for g in gates) else 0
