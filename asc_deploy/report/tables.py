"""The report's tables, built once as plain rows and rendered as markdown or rich tables.

- main_table: one row per (model, variant): layers, parameters, size, the task metric and its
  delta, faithfulness measures, and one cell per (host, provider, shape) with p50 / p95 and the
  speedup against the uncompressed PyTorch model on the same host, provider and shape;
- latency_table: one row per measurement with p50, p95, throughput, memory and speedup;
- gates_table, recommendation_table, strategy_table (layer-choice baselines, seeds as mean ±
  standard deviation), hosts_table.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from asc_deploy.report import results as R
from asc_deploy.report.gates import fmt_limit

MISSING = "–"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""


def fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    """A number with fixed decimals, or a dash when absent."""
    if value is None:
        return MISSING
    return f"{value:.{digits}f}{suffix}"


def _shape(m: dict[str, Any]) -> str:
    return f"{m['batch']}x{m['sequence']}"


def _targets(results: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """(host label, provider, batch, sequence) in measurement order, without repeats."""
    seen: dict[tuple, None] = {}
    for m in R.measurements(results):
        seen.setdefault((m["host_label"], m["provider"], m["batch"], m["sequence"]))
    return list(seen)


def _fidelity_cells(ev: dict[str, Any] | None) -> list[str]:
    fid = (ev or {}).get("fidelity") or {}
    cal = fid.get("calibration") or {}
    knn = fid.get("knn_agreement") or {}
    knn_cell = "/".join(fmt(knn.get(k)) for k in ("10", "20", "50")) if knn else MISSING
    return [
        fmt(fid.get("agreement"), 3),
        fmt(fid.get("error_jaccard"), 3),
        fmt(cal.get("ece"), 3),
        fmt(cal.get("brier"), 3),
        knn_cell,
    ]


def main_table(results: dict[str, Any]) -> Table:
    metric = (results.get("task") or {}).get("primary_metric", "metric")
    targets = _targets(results)
    one_host = len({t[0] for t in targets}) <= 1
    target_headers = [
        (f"{p} {b}x{s}" if one_host else f"{h} {p} {b}x{s}") + " p50/p95 ms"
        for h, p, b, s in targets
    ]
    headers = [
        "Model",
        "Kind",
        "Variant",
        "Layers",
        "Params (M)",
        "Size (MB)",
        metric,
        "Δ (pts)",
        "Agree",
        "Err J",
        "ECE",
        "Brier",
        "kNN@10/20/50",
        *target_headers,
    ]
    models, evals = R.models_by_name(results), R.evaluations_by_key(results)
    index = R.measurement_index(results)
    by_artifact = {
        (m["host_label"], m["provider"], m["batch"], m["sequence"], m["model"], m["variant"]): m
        for m in R.measurements(results)
    }
    table = Table("Main table", headers)
    for model, variant in R.artifact_keys(results):
        info, ev = models.get(model, {}), evals.get((model, variant))
        size = (ev or {}).get("size_bytes")
        row = [
            model,
            info.get("kind", MISSING),
            variant,
            _layers_cell(info),
            fmt(info["parameters"] / 1e6, 1) if info.get("parameters") else MISSING,
            fmt(size / 1e6, 1) if size else MISSING,
            fmt((ev or {}).get("primary")),
            fmt(R.delta_points(results, ev), 2) if ev else MISSING,
            *_fidelity_cells(ev),
        ]
        for target in targets:
            m = by_artifact.get((*target, model, variant))
            row.append(_latency_cell(results, m, index))
        table.rows.append(row)
    table.note = (
        "Δ in points vs the uncompressed model in PyTorch fp32; Agree / Err J / kNN "
        "against it; latency cells: p50 / p95 (speedup vs the uncompressed PyTorch "
        "model on the same host, provider and shape)."
    )
    return table


def _layers_cell(info: dict[str, Any]) -> str:
    """Layers kept, and which (1-based) were removed: "4 (-1,3)"."""
    removed = info.get("removed_layers") or []
    kept = fmt(info.get("layers"), 0)
    return f"{kept} (-{','.join(map(str, removed))})" if removed else kept


def _latency_cell(results, m: dict[str, Any] | None, index) -> str:
    if m is None:
        return MISSING
    lat = m["latency_ms"]
    sp = R.speedup(results, m, index)
    cell = f"{fmt(lat.get('p50'))} / {fmt(lat.get('p95'))}"
    cell += f" ({sp:.2f}x)" if sp is not None else ""
    return cell + (" noisy" if m.get("noisy") else "")


def latency_table(results: dict[str, Any], host_label: str) -> Table:
    """Every measurement of one host: latency, throughput, memory, speedup."""
    headers = [
        "Model",
        "Variant",
        "Runtime",
        "Provider",
        "Shape",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "Throughput /s",
        "Peak RSS MB",
        "Speedup",
        "Noisy",
    ]
    index = R.measurement_index(results)
    table = Table(f"Latency on {host_label}", headers)
    for m in R.measurements(results):
        if m["host_label"] != host_label:
            continue
        lat, mem = m["latency_ms"], m.get("memory_mb") or {}
        table.rows.append(
            [
                m["model"],
                m["variant"],
                m.get("runtime", MISSING),
                m["provider"],
                _shape(m),
                fmt(lat.get("p50")),
                fmt(lat.get("p95")),
                fmt(lat.get("p99")),
                fmt(m.get("throughput_per_s"), 1),
                fmt(mem.get("peak_rss"), 0),
                fmt(R.speedup(results, m, index), 2, "x"),
                "yes" if m.get("noisy") else "",
            ]
        )
    return table


def gates_table(gates: list[dict[str, Any]]) -> Table:
    table = Table("Release gates", ["Gate", "Result", "Value", "Limit", "Reason"])
    for g in gates:
        value = (
            g["value"] if g["value"] is None or isinstance(g["value"], str) else f"{g['value']:g}"
        )
        table.rows.append(
            [
                g["name"],
                "PASS" if g["passed"] else "FAIL",
                value or MISSING,
                fmt_limit(g["limit"]),
                g["reason"],
            ]
        )
    if not gates:
        table.note = "No gates configured (gates: in the run config)."
    return table


def recommendation_table(results: dict[str, Any], recommendation: dict[str, Any]) -> Table:
    metric = (results.get("task") or {}).get("primary_metric", "metric")
    headers = [
        "Target",
        "Host",
        "Model",
        "Variant",
        metric,
        "Δ (pts)",
        "Shape",
        "p50 ms",
        "p95 ms",
        "Speedup",
        "Size (MB)",
    ]
    table = Table("Recommendation", headers, note="No bench measurements: nothing to recommend.")
    if recommendation:
        table.note = "Fastest artifact within the accuracy budget on each target and host."
    for provider, rec in recommendation.items():
        for pick in (rec.get("by_host") or {"": rec}).values():
            if not pick or not pick.get("model"):
                table.rows.append(
                    [
                        provider,
                        MISSING,
                        MISSING,
                        MISSING,
                        MISSING,
                        MISSING,
                        MISSING,
                        MISSING,
                        MISSING,
                        MISSING,
                        MISSING,
                    ]
                )
                table.note = (pick or rec).get("reason", "")
                continue
            size = pick.get("size_bytes")
            table.rows.append(
                [
                    provider,
                    pick.get("host_label", MISSING),
                    pick["model"],
                    pick["variant"],
                    fmt(pick.get("primary")),
                    fmt(pick.get("delta")),
                    _shape(pick),
                    fmt(pick.get("p50_ms")),
                    fmt(pick.get("p95_ms")),
                    fmt(pick.get("speedup"), 2, "x"),
                    fmt(size / 1e6, 1) if size else MISSING,
                ]
            )
    return table


def _primary_of(results: dict[str, Any], model: str) -> float | None:
    """A model's metric in PyTorch (variant 'torch'), else its first evaluation's."""
    evals = [e for e in results.get("evaluations", []) if e["model"] == model]
    evals.sort(key=lambda e: e["variant"] != "torch")
    return evals[0].get("primary") if evals else None


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return fmt(values[0])
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def strategy_table(results: dict[str, Any]) -> Table:
    """Per threshold: ASC against the other layer choices removing as many layers."""
    groups: dict[tuple[float, str], list[float]] = {}
    removed: dict[float, int] = {}
    for m in results.get("models", []):
        if m.get("kind") not in ("asc", "strategy") or m.get("threshold") is None:
            continue
        value = _primary_of(results, m["name"])
        if value is not None:
            key = (m["threshold"], "asc" if m["kind"] == "asc" else m.get("strategy") or "?")
            groups.setdefault(key, []).append(value)
            removed[m["threshold"]] = len(m.get("removed_layers") or [])
    strategies = ["asc"] + sorted({s for _, s in groups} - {"asc"})
    table = Table(
        "Layer-choice baselines (same number of layers removed)",
        ["Threshold", "Removed", *strategies],
    )
    for threshold in sorted(removed, reverse=True):
        table.rows.append(
            [
                f"{threshold:g}",
                str(removed[threshold]),
                *[
                    _spread(groups[(threshold, s)]) if (threshold, s) in groups else MISSING
                    for s in strategies
                ],
            ]
        )
    table.note = "Task metric in PyTorch; several random seeds as mean ± standard deviation."
    return table


def hosts_table(results: dict[str, Any]) -> Table:
    headers = ["Host", "CPU", "ISA", "Cores", "Memory GB", "GPU", "onnxruntime", "Threads", "Flags"]
    table = Table("Hosts", headers)
    for doc in results.get("bench", []):
        h, s = doc.get("host", {}), doc.get("settings", {})
        cpu = h.get("cpu") or {}
        table.rows.append(
            [
                R.host_label(h),
                str(cpu.get("model", MISSING)),
                str(cpu.get("isa", MISSING)),
                f"{cpu.get('physical_cores', '?')}/{cpu.get('logical_cores', '?')}",
                fmt(h.get("memory_gb"), 1),
                (h.get("gpu") or {}).get("name", MISSING),
                (h.get("versions") or {}).get("onnxruntime", MISSING),
                f"{s.get('intra_op_threads', '?')}/{s.get('inter_op_threads', '?')}",
                "; ".join(doc.get("flags") or []) or MISSING,
            ]
        )
    return table


def _escape(cell: str) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    lines = [f"### {table.title}", ""]
    if not table.rows:
        lines.append(table.note or "(nothing to show)")
        return "\n".join(lines) + "\n"
    lines.append("| " + " | ".join(_escape(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"_{table.note}_"]
    return "\n".join(lines) + "\n"


def to_rich(table: Table):
    """A rich.table.Table for the terminal (rich imported here: tables stay importable alone)."""
    from rich.table import Table as RichTable

    out = RichTable(title=table.title, caption=table.note or None)
    for h in table.headers:
        out.add_column(h, overflow="fold")
    for row in table.rows:
        out.add_row(*row)
    return out
