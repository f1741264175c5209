"""What the report needs on top of the records: measurements across bench runs, order, speedup.

`records.Results` holds one `BenchRun` per host (and per re-run); the report looks at them as
one list of measurements, in report order, with a re-run on the same host replacing the older
numbers. Reading and validating files is `asc_deploy.records`' job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

from asc_deploy.fsutil import hash_json
from asc_deploy.records import (
    KIND_ORDER,
    VARIANT_ORDER,
    BenchRun,
    Evaluation,
    Measurement,
    Results,
    host_label,
)

Key = tuple[str, str]  # (model, variant)


class Item(Protocol):
    """Anything that names an artifact: an Evaluation, a Measurement, a Pick."""

    model: str
    variant: str


T = TypeVar("T", bound=Item)


def merge_bench(results: Results, extra: Iterable[BenchRun | tuple[BenchRun, str]]) -> Results:
    """A copy of `results` whose bench list also holds the `extra` runs (identical runs once),
    each may come as (run, the file it was read from); one host fingerprint under two hostnames
    is refused, as `bench-merge` refuses it."""
    from asc_deploy.measure.harness import check_host_name

    merged, seen, named = [], set(), {}
    tagged = [x if isinstance(x, tuple) else (x, "a bench run") for x in extra]
    for run, where in [*((r, "results.json") for r in results.bench), *tagged]:
        check_host_name(named, run.host.model_dump(), where)
        digest = hash_json(run.dump())
        if digest not in seen:
            seen.add(digest)
            merged.append(run)
    return results.model_copy(update={"bench": merged})


def host_labels(results: Results) -> list[str]:
    """Distinct hosts' labels in bench order (the run's own host first)."""
    return list(dict.fromkeys(host_label(run.host) for run in results.bench))


def measurements(results: Results) -> list[Measurement]:
    """Every measurement of every bench run, each tagged with its host.

    If two runs from one host measure the same thing, the later `created` wins, so a re-run on
    the same machine replaces rather than duplicates its rows.
    """
    latest: dict[tuple, Measurement] = {}
    for run in sorted(results.bench, key=lambda r: r.created):
        for m in run.measurements:
            latest[(*m.key, m.runtime)] = m
    order = {fp: i for i, fp in enumerate(dict.fromkeys(r.host.fingerprint for r in results.bench))}
    # Stable sort: report order within a host, hosts in bench order.
    return sorted(sort_items(results, latest.values()), key=lambda m: order[m.host])


def _sort_key(results: Results, item: Item) -> tuple:
    model = results.model(item.model)
    kind = model.kind if model else "strategy"
    # Higher thresholds remove fewer layers: list them first.
    threshold = -(model.threshold or 0.0) if model else 0.0
    variant = item.variant
    v_rank = VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER)
    return (
        KIND_ORDER.index(kind), threshold, item.model, v_rank, variant,
        getattr(item, "provider", ""), getattr(item, "batch", 0), getattr(item, "sequence", 0),
    )  # fmt: skip


def sort_items(results: Results, items: Iterable[T]) -> list[T]:
    """Items ordered: reference, ASC by threshold, quantised, off-the-shelf, then baselines."""
    return sorted(items, key=lambda item: _sort_key(results, item))


def artifact_keys(results: Results) -> list[Key]:
    """Every (model, variant) evaluated or measured, in report order."""
    items: dict[Key, Item] = {e.key: e for e in results.evaluations}
    for m in measurements(results):
        items.setdefault((m.model, m.variant), m)
    return [(i.model, i.variant) for i in sort_items(results, items.values())]


MeasurementIndex = dict[tuple, Measurement]


def measurement_index(results: Results) -> MeasurementIndex:
    return {m.key: m for m in measurements(results)}


def baseline_measurement(
    results: Results, m: Measurement, index: MeasurementIndex | None = None
) -> Measurement | None:
    """The uncompressed PyTorch measurement on m's host, provider and shape (speedup basis)."""
    index = index if index is not None else measurement_index(results)
    return index.get((m.host, results.reference().name, "torch", m.provider, m.batch, m.sequence))


def speedup(
    results: Results, m: Measurement, index: MeasurementIndex | None = None
) -> float | None:
    """p50 of the uncompressed PyTorch model / p50 of m, same host/provider/shape."""
    base = baseline_measurement(results, m, index)
    if base is None or not m.latency_ms.p50 or not base.latency_ms.p50:
        return None
    return base.latency_ms.p50 / m.latency_ms.p50


def evaluations_of(results: Results, keys: Sequence[Key]) -> list[Evaluation]:
    """The evaluations of `keys` that exist, in report order."""
    found = [results.evaluation(*key) for key in keys]
    return sort_items(results, [e for e in found if e is not None])
