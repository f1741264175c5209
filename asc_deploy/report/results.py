"""Read results.json and bench.json, check their schema versions, and look things up in them.

Every report module works from the results dict through these helpers, so the knowledge of the
schema (docs/results-schema.md) lives in one place. Measurements from several bench documents
(one per host) are flattened and tagged with their host's fingerprint and a short label.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from asc_deploy.errors import UserError
from asc_deploy.fsutil import hash_json

RESULTS_SCHEMA = "asc-deploy.results/1"
BENCH_SCHEMA = "asc-deploy.bench/1"

KIND_ORDER = ("reference", "asc", "quantized", "off-the-shelf", "strategy")
VARIANT_ORDER = (
    "torch",
    "torch-dynamic-int8",
    "fp32",
    "optimized",
    "int8-dynamic",
    "int8-static",
    "fp16",
)
Key = tuple[str, str]  # (model, variant)


def check_schema(doc: Any, expected: str, source: str) -> None:
    """Refuse a document that is not `expected`'s kind or has an unknown major version."""
    kind, major = expected.split("/")
    got = doc.get("schema") if isinstance(doc, dict) else None
    if not isinstance(got, str) or "/" not in got:
        raise UserError(f"{source}: no 'schema' key; expected a {expected} document")
    got_kind, got_version = got.split("/", 1)
    if got_kind != kind:
        raise UserError(f"{source}: schema {got!r} is not a {kind} document")
    if got_version.split(".")[0] != major:
        raise UserError(
            f"{source}: schema version {got_version} is unknown (this asc-deploy reads "
            f"{expected}); upgrade asc-deploy or regenerate the file"
        )


def _read(path: str | Path, expected: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}; pass the path of an existing {expected} file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc
    check_schema(doc, expected, str(path))
    return doc


def load_results(path: str | Path) -> dict[str, Any]:
    """A results.json, schema-checked, with its required sections present."""
    doc = _read(path, RESULTS_SCHEMA)
    for key in ("models", "evaluations"):
        if not isinstance(doc.get(key), list):
            raise UserError(f"{path}: '{key}' must be a list; the file is incomplete")
    doc.setdefault("bench", [])
    return doc


def load_bench(path: str | Path) -> dict[str, Any]:
    """A bench.json, schema-checked."""
    doc = _read(path, BENCH_SCHEMA)
    if not isinstance(doc.get("measurements"), list) or not isinstance(doc.get("host"), dict):
        raise UserError(f"{path}: a bench document needs 'host' and 'measurements'")
    return doc


def merge_bench(results: dict[str, Any], extra: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A copy of `results` whose bench list also holds `extra` documents (duplicates dropped)."""
    merged, seen = [], set()
    for doc in [*results.get("bench", []), *extra]:
        check_schema(doc, BENCH_SCHEMA, "bench document")
        digest = hash_json(doc)
        if digest not in seen:
            seen.add(digest)
            merged.append(doc)
    return {**results, "bench": merged}


def host_label(host: dict[str, Any]) -> str:
    """A short readable host name: hostname plus the fingerprint's first 8 characters."""
    fp = str(host.get("fingerprint") or "unknown")
    return f"{host.get('hostname') or 'host'} ({fp[:8]})"


def hosts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Distinct hosts in bench order (the run's own host first), each with a 'label'."""
    out, seen = [], set()
    for doc in results.get("bench", []):
        host = doc.get("host", {})
        fp = host.get("fingerprint")
        if fp not in seen:
            seen.add(fp)
            out.append({**host, "label": host_label(host)})
    return out


def measurements(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measurement tagged with 'host' (fingerprint) and 'host_label'.

    If two documents from one host measure the same thing, the later `created` wins, so a
    re-run on the same machine replaces rather than duplicates its rows.
    """
    docs = sorted(results.get("bench", []), key=lambda d: str(d.get("created", "")))
    latest: dict[tuple, dict[str, Any]] = {}
    for doc in docs:
        host = doc.get("host", {})
        for m in doc.get("measurements", []):
            tagged = {**m, "host": host.get("fingerprint"), "host_label": host_label(host)}
            latest[measurement_key(tagged) + (m.get("runtime"),)] = tagged
    order = {h["fingerprint"]: i for i, h in enumerate(hosts(results))}
    # Stable sort: report order within a host, hosts in bench order.
    ordered = sort_items(results, latest.values())
    return sorted(ordered, key=lambda m: order.get(m["host"], len(order)))


def measurement_key(m: dict[str, Any]) -> tuple:
    """(host, model, variant, provider, batch, sequence): what makes two measurements comparable."""
    return (m.get("host"), m["model"], m["variant"], m["provider"], m["batch"], m["sequence"])


def models_by_name(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in results.get("models", [])}


def reference_name(results: dict[str, Any]) -> str:
    """The uncompressed model's name (kind 'reference')."""
    for m in results.get("models", []):
        if m.get("kind") == "reference":
            return m["name"]
    raise UserError("results.json has no model of kind 'reference' (the uncompressed model)")


def evaluations_by_key(results: dict[str, Any]) -> dict[Key, dict[str, Any]]:
    return {(e["model"], e["variant"]): e for e in results.get("evaluations", [])}


def reference_evaluation(results: dict[str, Any]) -> dict[str, Any] | None:
    """The uncompressed model evaluated in PyTorch fp32 (variant 'torch'), else its first."""
    ref = reference_name(results)
    evals = [e for e in results.get("evaluations", []) if e["model"] == ref]
    torch_evals = [e for e in evals if e["variant"] == "torch"]
    return (torch_evals or evals or [None])[0]


def delta_points(results: dict[str, Any], evaluation: dict[str, Any]) -> float | None:
    """The evaluation's delta in points, computed from the reference when not stored."""
    if evaluation.get("delta") is not None:
        return float(evaluation["delta"])
    ref = reference_evaluation(results)
    if ref is None or ref.get("primary") is None or evaluation.get("primary") is None:
        return None
    return float(evaluation["primary"]) - float(ref["primary"])


def _sort_key(models: dict[str, dict[str, Any]], item: dict[str, Any]) -> tuple:
    model = models.get(item["model"], {})
    kind = model.get("kind", "strategy")
    kind_rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    variant = item.get("variant")
    v_rank = VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER)
    # Higher thresholds remove fewer layers: list them first.
    threshold = -(model.get("threshold") or 0.0)
    return (
        kind_rank, threshold, item["model"], v_rank, str(variant),
        item.get("provider", ""), item.get("batch", 0), item.get("sequence", 0),
    )  # fmt: skip


def sort_items(results: dict[str, Any], items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items with 'model'/'variant' ordered: reference, ASC by threshold, then baselines."""
    models = models_by_name(results)
    return sorted(items, key=lambda item: _sort_key(models, item))


def artifact_keys(results: dict[str, Any]) -> list[Key]:
    """Every (model, variant) evaluated or measured, in report order."""
    items = {(e["model"], e["variant"]): e for e in results.get("evaluations", [])}
    for m in measurements(results):
        items.setdefault((m["model"], m["variant"]), {"model": m["model"], "variant": m["variant"]})
    return [(i["model"], i["variant"]) for i in sort_items(results, items.values())]


def baseline_measurement(
    results: dict[str, Any], m: dict[str, Any], index: dict[tuple, dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The uncompressed PyTorch measurement on m's host, provider and shape (speedup basis)."""
    index = index if index is not None else measurement_index(results)
    ref = reference_name(results)
    key = (m.get("host"), ref, "torch", m["provider"], m["batch"], m["sequence"])
    return index.get(key)


def measurement_index(results: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    return {measurement_key(m): m for m in measurements(results)}


def speedup(
    results: dict[str, Any], m: dict[str, Any], index: dict[tuple, dict[str, Any]] | None = None
) -> float | None:
    """p50 of the uncompressed PyTorch model / p50 of m, same host/provider/shape."""
    base = baseline_measurement(results, m, index)
    if base is None:
        return None
    p50, base_p50 = m["latency_ms"].get("p50"), base["latency_ms"].get("p50")
    return base_p50 / p50 if p50 and base_p50 else None
