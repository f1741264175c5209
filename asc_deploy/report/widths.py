"""The depth x width table: every width-compressed model beside the models it narrows.

One row per model on either axis (the uncompressed model, each depth candidate a width target
narrows, each width-compressed model): layers and widths, parameters, GFLOP per example, the
task metric in PyTorch with its paired CI against the uncompressed model, the int8-dynamic
artifact's metric with its CI, and fp32 / int8 p50 at the gate's target and shape with the int8
speedup over the uncompressed int8-dynamic artifact: what depth alone, width alone and both
together buy at what cost.
"""

from __future__ import annotations

from asc_deploy.records import Measurement, ModelEntry, Results
from asc_deploy.report import results as R
from asc_deploy.report.paired import MISSING
from asc_deploy.report.tables import Table, _millions, delta_cell, fmt

INT8 = "int8-dynamic"


def _shape(results: Results) -> tuple[str, int, int] | None:
    """(provider, batch, sequence) the speedup gate names, else the first one measured."""
    gates = results.run.config.get("gates", {})
    ms = R.measurements(results)
    wanted = (gates.get("speedup_target"), *(gates.get("speedup_shape") or (None, None)))
    measured = [(m.provider, m.batch, m.sequence) for m in ms if m.host == ms[0].host]
    if tuple(wanted) in measured:
        return tuple(wanted)  # type: ignore[return-value]
    return measured[0] if measured else None


def _rows(results: Results) -> list[ModelEntry]:
    widths = [m for m in results.models if m.kind == "width"]
    narrowed = {w.width.narrows for w in widths if w.width}
    depth = [m for m in results.models if m.name in narrowed or m.kind == "reference"]
    return depth + sorted(
        widths,
        key=lambda m: (-m.layers, -m.width.shape.hidden, -m.width.shape.ffn) if m.width else (0,),
    )


def depth_width_table(results: Results) -> Table | None:
    rows = _rows(results)
    if not any(m.kind == "width" for m in rows):
        return None
    shape = _shape(results)
    index = R.measurement_index(results)
    host = R.measurements(results)[0].host if shape else None
    metric = results.task.primary_metric
    label = f"{shape[0]} {shape[1]}x{shape[2]}" if shape else "p50"

    def p50(model: str, variant: str) -> Measurement | None:
        return index.get((host, model, variant, *shape)) if shape else None

    reference = results.reference().name
    base_int8 = p50(reference, INT8)
    before = next((m.width.before for m in rows if m.width), None)
    table = Table(
        "Depth x width",
        [
            "Model", "Layers", "Hidden", "FFN", "Heads", "Params (M)", "GFLOP",
            f"{metric} (PyTorch)", "Δ [95% CI]", f"{metric} ({INT8})", "int8 Δ [95% CI]",
            f"fp32 p50 ms {label}", f"int8 p50 ms {label}", "int8 speedup vs uncompressed int8",
        ],
    )  # fmt: skip
    for model in rows:
        width = model.width.shape if model.width else before
        torch_ev = results.evaluation(model.name, "torch")
        int8_ev = results.evaluation(model.name, INT8)
        fp32_m, int8_m = p50(model.name, "fp32"), p50(model.name, INT8)
        flops = next((m.flops_per_example for m in (fp32_m, int8_m) if m), None)
        table.rows.append(
            [
                model.name,
                str(model.layers),
                str(width.hidden) if width else MISSING,
                str(width.ffn) if width else MISSING,
                str(width.heads) if width else MISSING,
                _millions(model.parameters),
                f"{flops / 1e9:.3g}" if flops else MISSING,
                fmt(torch_ev.primary if torch_ev else None),
                delta_cell(torch_ev, metric),
                fmt(int8_ev.primary if int8_ev else None),
                delta_cell(int8_ev, metric),
                fmt(fp32_m.latency_ms.p50 if fp32_m else None),
                fmt(int8_m.latency_ms.p50 if int8_m else None),
                _ratio(base_int8, int8_m),
            ]
        )
    table.note = (
        "Depth first, then width, then one distillation from the uncompressed model (or as "
        "configured: apc.order); Δ in points vs the uncompressed model in PyTorch with its paired "
        "95% CI (* significant); GFLOP per example at the shape's mean length; the speedup is "
        f"the uncompressed {INT8} artifact's p50 over this model's, same host, provider and shape."
        " Width compression is trained on the task loss with distillation (the staged "
        "checkpoints have no MLM/NSP heads)."
    )
    return table


def _ratio(base: Measurement | None, m: Measurement | None) -> str:
    if base is None or m is None or not m.latency_ms.p50:
        return MISSING
    return f"{base.latency_ms.p50 / m.latency_ms.p50:.2f}x"
