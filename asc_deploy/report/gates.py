"""Release gates: each configured limit in GatesConfig becomes {name, passed, value, limit, reason}.

What each gate checks:
- max_accuracy_drop (points): by default the recommended artifact of every target provider (the
  artifact that would ship); with scope "asc", every evaluated ASC artifact (every variant of
  every kind-'asc' model) as well, which catches a quantisation that broke an artifact nobody
  picked. Strategy baselines and off-the-shelf models are comparisons, never gated.
- min_speedup: the recommended artifact on `speedup_target` at `speedup_shape`, on every host
  that measured it, against the uncompressed PyTorch model on the same host.
- max_latency_regression (fraction): every measurement that the baseline results.json also has
  (same model/variant/provider/batch/sequence, and the same host when the baseline has any
  measurement from one of our hosts); noisy measurements on either side are skipped.
- max_size_mb (MB = 10^6 bytes): the recommended artifacts (scope "asc": every ASC artifact too).
Gates left unset (None) are not reported. A gate with nothing to check fails, saying why: a
release gate that silently passes on missing data is worse than none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from asc_deploy.config import GatesConfig
from asc_deploy.errors import UserError
from asc_deploy.report import results as R

Scope = Literal["recommended", "asc"]
EPS = 1e-9


def gates_config(results: dict[str, Any]) -> GatesConfig:
    """The `gates:` section of the run config stored in results.json (defaults if absent)."""
    raw = ((results.get("run") or {}).get("config") or {}).get("gates") or {}
    try:
        return GatesConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise UserError(f"results.json run.config.gates.{key}: {first['msg']}") from exc


def load_baseline(config: GatesConfig, explicit: str | Path | None = None) -> dict | None:
    """The release-baseline results.json: `explicit` (--baseline) wins over gates.baseline."""
    path = explicit or config.baseline
    return R.load_results(path) if path else None


def fmt_limit(value: float) -> str:
    """A configured limit as the user wrote it, with at least one decimal (1 -> 1.0)."""
    text = f"{value:g}"
    return text if any(c in text for c in ".e") else text + ".0"


def _gate(name: str, passed: bool, value: Any, limit: Any, reason: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "value": value, "limit": limit, "reason": reason}


def _label(item: dict[str, Any]) -> str:
    return f"{item['model']} {item['variant']}"


def _picks(recommendation: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every host's pick for every provider, without repeats."""
    picks = []
    for rec in recommendation.values():
        for pick in (rec.get("by_host") or {"_": rec}).values():
            if pick and pick.get("model") and pick not in picks:
                picks.append(pick)
    return picks


def _nothing(scope: Scope) -> str:
    if scope == "recommended":
        return (
            "no recommended artifact: nothing within the accuracy budget measured at the gate shape"
        )
    return "no recommended or ASC artifact evaluated"


def _scoped_evaluations(results, recommendation, scope: Scope) -> list[dict[str, Any]]:
    evals = R.evaluations_by_key(results)
    keys = {(p["model"], p["variant"]) for p in _picks(recommendation)}
    if scope == "asc":
        kinds = {m["name"]: m.get("kind") for m in results.get("models", [])}
        keys |= {k for k in evals if kinds.get(k[0]) == "asc"}
    items = [evals[k] for k in keys if k in evals]
    return R.sort_items(results, items)


def accuracy_gate(results, recommendation, limit: float, scope: Scope) -> dict[str, Any]:
    evals = _scoped_evaluations(results, recommendation, scope)
    drops = [
        (-(R.delta_points(results, e) or 0.0), e)
        for e in evals
        if R.delta_points(results, e) is not None
    ]
    if not drops:
        return _gate("max_accuracy_drop", False, None, limit, _nothing(scope))
    drop, worst = max(drops, key=lambda d: d[0])
    passed = drop <= limit + EPS
    verb = "<=" if passed else ">"
    reason = f"{_label(worst)} drops {fmt_limit(round(drop, 2))} points {verb} {fmt_limit(limit)}"
    if drop < 0:  # an improvement: say so rather than "drops -0.5"
        gain = fmt_limit(round(-drop, 2))
        reason = f"{_label(worst)} gains {gain} points (limit {fmt_limit(limit)})"
    return _gate("max_accuracy_drop", passed, round(drop, 4), limit, reason)


def speedup_gate(results, recommendation, config: GatesConfig) -> dict[str, Any]:
    target, (batch, sequence), limit = (
        config.speedup_target,
        config.speedup_shape,
        config.min_speedup,
    )
    rec = recommendation.get(target)
    picks = list((rec.get("by_host") or {"_": rec}).values()) if rec else []
    picks = [p for p in picks if p and p.get("model")]
    shape = f"{target} {batch}x{sequence}"
    if not picks:
        return _gate("min_speedup", False, None, limit, f"no artifact measured on {shape}")
    missing = [p for p in picks if p.get("speedup") is None]
    if missing:
        reason = f"no uncompressed PyTorch measurement on {shape} ({missing[0]['host_label']})"
        return _gate("min_speedup", False, None, limit, reason)
    worst = min(picks, key=lambda p: p["speedup"])
    passed = worst["speedup"] >= limit - EPS
    verb = ">=" if passed else "<"
    host = f" on {worst['host_label']}" if len(picks) > 1 else ""
    reason = (
        f"{_label(worst)} is {worst['speedup']:.2f}x on {shape}{host} {verb} {fmt_limit(limit)}x"
    )
    return _gate("min_speedup", passed, round(worst["speedup"], 4), limit, reason)


def _baseline_pairs(results, baseline) -> tuple[list[tuple[dict, dict]], bool]:
    """(current, baseline) measurement pairs, and whether they were matched across hosts."""
    now = [m for m in R.measurements(results) if not m.get("noisy")]
    base = [m for m in R.measurements(baseline) if not m.get("noisy")]
    same_host = {m["host"] for m in now} & {m["host"] for m in base}
    if same_host:
        index = {R.measurement_key(m): m for m in base}
        return [
            (m, index[R.measurement_key(m)]) for m in now if R.measurement_key(m) in index
        ], False
    index = {R.measurement_key(m)[1:]: m for m in base}
    return [
        (m, index[R.measurement_key(m)[1:]]) for m in now if R.measurement_key(m)[1:] in index
    ], True


def regression_gate(results, baseline, limit: float) -> dict[str, Any]:
    name = "max_latency_regression"
    if baseline is None:
        reason = "no baseline results.json given (set gates.baseline or pass --baseline)"
        return _gate(name, False, None, limit, reason)
    pairs, cross_host = _baseline_pairs(results, baseline)
    pairs = [(m, b) for m, b in pairs if m["latency_ms"].get("p50") and b["latency_ms"].get("p50")]
    if not pairs:
        return _gate(name, False, None, limit, "no measurement matches one in the baseline")
    ratio, m, b = max(
        ((m["latency_ms"]["p50"] / b["latency_ms"]["p50"] - 1, m, b) for m, b in pairs),
        key=lambda t: t[0],
    )
    passed = ratio <= limit + EPS
    verb = "<=" if passed else ">"
    where = f"{m['provider']} {m['batch']}x{m['sequence']}"
    reason = (
        f"{_label(m)} {where} p50 {m['latency_ms']['p50']:.2f} ms vs "
        f"{b['latency_ms']['p50']:.2f} ms baseline ({ratio:+.0%} {verb} {limit:.0%})"
    )
    if cross_host:
        reason += " (baseline measured on a different host)"
    return _gate(name, passed, round(ratio, 4), limit, reason)


def size_gate(results, recommendation, limit: float, scope: Scope) -> dict[str, Any]:
    evals = _scoped_evaluations(results, recommendation, scope)
    sized = [(e["size_bytes"] / 1e6, e) for e in evals if e.get("size_bytes")]
    if not sized:
        return _gate("max_size_mb", False, None, limit, _nothing(scope) + " with a known size")
    size, worst = max(sized, key=lambda s: s[0])
    passed = size <= limit + EPS
    verb = "<=" if passed else ">"
    reason = f"{_label(worst)} is {size:.1f} MB {verb} {fmt_limit(limit)} MB"
    return _gate("max_size_mb", passed, round(size, 3), limit, reason)


def evaluate_gates(
    results: dict[str, Any],
    config: GatesConfig,
    recommendation: dict[str, dict[str, Any]],
    baseline: dict[str, Any] | None = None,
    scope: Scope = "recommended",
) -> list[dict[str, Any]]:
    """Every configured gate, in a fixed order."""
    gates = []
    if config.max_accuracy_drop is not None:
        gates.append(accuracy_gate(results, recommendation, config.max_accuracy_drop, scope))
    if config.min_speedup is not None:
        gates.append(speedup_gate(results, recommendation, config))
    if config.max_latency_regression is not None:
        gates.append(regression_gate(results, baseline, config.max_latency_regression))
    if config.max_size_mb is not None:
        gates.append(size_gate(results, recommendation, config.max_size_mb, scope))
    return gates


def failure_lines(gates: list[dict[str, Any]]) -> list[str]:
    """One line per violated gate, as the CLI prints them."""
    return [f"gate {g['name']} failed: {g['reason']}" for g in gates if not g["passed"]]
