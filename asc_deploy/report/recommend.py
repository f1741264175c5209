"""The recommendation: the fastest artifact within the accuracy budget on each target provider.

For every host and provider, candidates are the evaluated (model, variant) artifacts measured at
the gate shape (GatesConfig.speedup_shape) whose primary metric is at most
GatesConfig.accuracy_budget points below the uncompressed PyTorch model; the lowest p50 wins.
The uncompressed model is itself a candidate, so a pick exists whenever it was measured.
Latencies from different hosts are never compared: `recommendation[provider]` is the pick on
the first host that measured that provider (the run's own host comes first in `bench`), and
`by_host` holds every host's pick when more than one host measured it.
"""

from __future__ import annotations

from typing import Any

from asc_deploy.config import GatesConfig
from asc_deploy.report import results as R

EPS = 1e-9  # a delta of exactly -budget is within budget despite float rounding


def _pick(
    results: dict[str, Any], candidates: list[dict[str, Any]], index: dict
) -> dict[str, Any] | None:
    evals = R.evaluations_by_key(results)
    best = min(candidates, key=lambda m: m["latency_ms"]["p50"], default=None)
    if best is None:
        return None
    ev = evals[(best["model"], best["variant"])]
    return {
        "model": best["model"],
        "variant": best["variant"],
        "primary": ev.get("primary"),
        "delta": R.delta_points(results, ev),
        "p50_ms": best["latency_ms"]["p50"],
        "p95_ms": best["latency_ms"].get("p95"),
        "speedup": R.speedup(results, best, index),
        "size_bytes": ev.get("size_bytes") or best.get("size_bytes"),
        "artifact": best.get("artifact"),
        "host": best["host"],
        "host_label": best["host_label"],
        "batch": best["batch"],
        "sequence": best["sequence"],
    }


def within_budget(results: dict[str, Any], budget: float) -> set[R.Key]:
    """(model, variant) pairs evaluated no more than `budget` points below the reference."""
    keys = set()
    for ev in results.get("evaluations", []):
        delta = R.delta_points(results, ev)
        if delta is not None and delta >= -budget - EPS:
            keys.add((ev["model"], ev["variant"]))
    return keys


def recommend(results: dict[str, Any], gates: GatesConfig) -> dict[str, dict[str, Any]]:
    """Provider -> the pick (see the module docstring); a provider with no candidate at the
    gate shape gets {"model": None, "reason": ...}."""
    batch, sequence = gates.speedup_shape
    eligible = within_budget(results, gates.accuracy_budget)
    index = R.measurement_index(results)
    per_host: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for m in R.measurements(results):
        bucket = per_host.setdefault(m["provider"], {}).setdefault(m["host_label"], [])
        at_shape = (m["batch"], m["sequence"]) == (batch, sequence)
        if at_shape and (m["model"], m["variant"]) in eligible and m["latency_ms"].get("p50"):
            bucket.append(m)
    out: dict[str, dict[str, Any]] = {}
    for provider, by_host in per_host.items():
        picks = {label: _pick(results, cands, index) for label, cands in by_host.items()}
        first = next(iter(picks.values()))
        if first is None:
            first = {
                "model": None,
                "variant": None,
                "reason": (
                    f"no artifact within {gates.accuracy_budget:g} points was measured on "
                    f"{provider} at {batch}x{sequence}"
                ),
            }
        out[provider] = dict(first)
        if len(picks) > 1:
            out[provider]["by_host"] = picks
    return out
