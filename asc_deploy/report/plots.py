"""The report's figures as PNG bytes (matplotlib, Agg canvas: no display, no global pyplot state).

- accuracy vs latency at one host/provider/shape, Pareto frontier marked;
- accuracy vs artifact size, Pareto frontier marked;
- the ASC similarity heatmap with removed layers marked, next to each threshold's choices;
- latency vs batch size and vs sequence length;
- reliability diagrams (accuracy against confidence per bin) of the reference and ASC models.
Each function returns None when the results hold nothing to draw.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from asc_deploy.plotting import png_bytes, selection_grid
from asc_deploy.records import Evaluation, Results
from asc_deploy.report import decision as D
from asc_deploy.report import results as R
from asc_deploy.report.pareto import pareto_front

KIND_COLOURS = {
    "reference": "black",
    "asc": "tab:blue",
    "quantized": "tab:purple",
    "off-the-shelf": "tab:green",
    "strategy": "tab:gray",
    "width": "tab:orange",  # APC: narrower layers (alone or on a depth candidate)
}
MARKERS = {
    "torch": "o",
    "torch-dynamic-int8": "P",
    "fp32": "s",
    "optimized": "D",
    "int8-dynamic": "^",
    "int8-per-channel": "<",
    "int8-mixed": ">",
    "int8-static": "v",
    "fp16": "*",
}
# Strategies have the same depth as ASC (the same graph shape); width models a new shape.
SCALING_KINDS = ("reference", "asc", "quantized", "off-the-shelf", "width")


def _decided(results: Results, ev: Evaluation) -> float | None:
    """`ev`'s primary metric on the examples the decisions are taken on: the frontier drawn is
    then the one the recommendation is read off (the eval holdout when the run scored one)."""
    if not D.on_eval_holdout(results):
        return ev.primary
    return ev.eval_holdout.primary if ev.eval_holdout is not None else None


def _metric_label(results: Results) -> str:
    where = "eval holdout" if D.on_eval_holdout(results) else "evaluation split"
    return f"{results.task.primary_metric} ({where})"


def _kinds(results: Results) -> dict[str, str]:
    return {m.name: m.kind for m in results.models}


def _scatter_with_front(
    ax, results: Results, points: list[tuple[float, float, str, str]], xlabel: str
) -> None:
    """points: (cost, value, model, variant); drawn coloured by kind and shaped by variant, the
    frontier as a red step. Only frontier points are labelled (every label overlaps on a real
    run); the legend names the colours and shapes of the rest."""
    kinds = _kinds(results)
    for cost, value, model, variant in points:
        ax.scatter(
            cost,
            value,
            color=KIND_COLOURS.get(kinds.get(model), "tab:brown"),
            marker=MARKERS.get(variant, "o"),
            s=40,
            zorder=3,
        )
    front = [points[i] for i in pareto_front([(p[0], p[1]) for p in points])]
    for cost, value, model, variant in front:
        ax.annotate(
            f"{model}/{variant}",
            (cost, value),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.step(
        [p[0] for p in front],
        [p[1] for p in front],
        where="post",
        color="tab:red",
        linewidth=1.5,
        label="Pareto frontier",
        zorder=2,
    )
    ax.scatter(
        [p[0] for p in front],
        [p[1] for p in front],
        facecolors="none",
        edgecolors="tab:red",
        s=120,
        zorder=4,
    )
    _legend(ax, {kinds.get(p[2]) for p in points}, {p[3] for p in points})
    costs = [p[0] for p in points]
    if min(costs) > 0 and max(costs) / min(costs) > 20:  # PyTorch next to ONNX: spread them out
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_metric_label(results))
    ax.grid(alpha=0.3, which="both")


def _legend(ax, kinds: set[str | None], variants: set[str]) -> None:
    """One entry per kind (colour) and per variant (marker) present, plus the frontier."""
    handles = [Line2D([], [], color="tab:red", label="Pareto frontier")]
    handles += [
        Line2D([], [], linestyle="", marker="o", color=colour, label=kind)
        for kind, colour in KIND_COLOURS.items()
        if kind in kinds
    ]
    handles += [
        Line2D([], [], linestyle="", marker=marker, color="gray", label=variant)
        for variant, marker in MARKERS.items()
        if variant in variants
    ]
    ax.legend(handles=handles, fontsize=7, loc="best", ncol=2)


def latency_points(
    results: Results, host_label: str, provider: str, batch: int, sequence: int
) -> list[tuple[float, float, str, str]]:
    """(p50 ms, the decided metric, model, variant) of every artifact measured at the shape."""
    points = []
    for m in R.measurements(results):
        ev = results.evaluation(m.model, m.variant)
        at = (m.host_label, m.provider, m.batch, m.sequence) == (
            host_label,
            provider,
            batch,
            sequence,
        )
        value = _decided(results, ev) if ev is not None else None
        if at and value is not None and m.latency_ms.p50:
            points.append((m.latency_ms.p50, value, m.model, m.variant))
    return points


def accuracy_vs_latency(
    results: Results, host_label: str, provider: str, batch: int, sequence: int
) -> bytes | None:
    points = latency_points(results, host_label, provider, batch, sequence)
    if not points:
        return None
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    _scatter_with_front(ax, results, points, f"p50 latency (ms), {provider} {batch}x{sequence}")
    ax.set_title(f"{_metric_label(results)} vs latency on {host_label}")
    return png_bytes(fig)


def accuracy_vs_size(results: Results) -> bytes | None:
    points = [
        (e.size_bytes / 1e6, value, e.model, e.variant)
        for e in results.evaluations
        if e.size_bytes and (value := _decided(results, e)) is not None
    ]
    if not points:
        return None
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    _scatter_with_front(ax, results, points, "artifact size (MB)")
    ax.set_title(f"{_metric_label(results)} vs size")
    return png_bytes(fig)


def similarity_heatmap(results: Results) -> bytes | None:
    """The layer-similarity matrix; removed layers' labels in red; a grid of each threshold's
    choice beside it (layers are 1-based; state 0 is the embedding output)."""
    sim = results.similarity
    if sim is None or len(sim.matrix) < 2:
        return None
    matrix, n_layers = sim.matrix, sim.num_layers
    first = 0 if len(matrix) == n_layers + 1 else 1  # does the matrix include state 0?
    labels = list(range(first, first + len(matrix)))
    selections = {float(t): v for t, v in sim.selections.items()}
    removed = set().union(*selections.values()) if selections else set()
    fig = Figure(figsize=(11, 5))
    ax, ax_sel = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    image = ax.imshow(matrix, cmap="viridis", vmin=min(map(min, matrix)), vmax=1.0)
    scale = fig.colorbar(image, ax=ax, shrink=0.8, label="cosine similarity (red: thresholds)")
    # The thresholds on the matrix's own scale: one above every value removes nothing.
    for threshold in selections:
        scale.ax.axhline(threshold, color="tab:red", linewidth=2)
    ax.set_xticks(range(len(labels)), [str(x) for x in labels])
    ax.set_yticks(range(len(labels)), [str(x) for x in labels])
    for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        if int(tick.get_text()) in removed:
            tick.set_color("tab:red")
            tick.set_fontweight("bold")
    ax.set_title("Hidden-state similarity (red: removed at some threshold)")
    ax.set_xlabel("hidden state / layer")
    selection_grid(ax_sel, selections, n_layers)
    return png_bytes(fig)


def latency_scaling(
    results: Results, host_label: str, provider: str, axis: str, fixed: int
) -> bytes | None:
    """p50 against batch size (axis="batch", sequence = fixed) or sequence length."""
    other = "sequence" if axis == "batch" else "batch"
    kinds = _kinds(results)
    lines: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for m in R.measurements(results):
        if (m.host_label, m.provider, getattr(m, other)) != (host_label, provider, fixed):
            continue
        if kinds.get(m.model) in SCALING_KINDS and m.latency_ms.p50:
            lines.setdefault((m.model, m.variant), []).append((getattr(m, axis), m.latency_ms.p50))
    if not lines or all(len(v) < 2 for v in lines.values()):
        return None  # a single size along the axis says nothing about scaling
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for (model, variant), pts in lines.items():
        pts.sort()
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker=MARKERS.get(variant, "o"),
            color=KIND_COLOURS.get(kinds.get(model), "tab:brown"),
            alpha=0.5 + 0.5 * (variant != "fp32"),
            label=f"{model}/{variant}",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(f"{axis} ({other} = {fixed})")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title(f"Latency vs {axis} on {host_label}, {provider}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    return png_bytes(fig)


def _calibrated(results: Results) -> list[Evaluation]:
    """One evaluation per reference/ASC model (PyTorch first) that has calibration bins."""
    kinds = _kinds(results)
    chosen: dict[str, Evaluation] = {}
    for ev in R.sort_items(results, results.evaluations):
        cal = ev.fidelity.calibration if ev.fidelity else None
        if kinds.get(ev.model) in ("reference", "asc") and cal and cal.bins:
            chosen.setdefault(ev.model, ev)
    return list(chosen.values())


def reliability_diagrams(results: Results) -> bytes | None:
    evals = _calibrated(results)
    if not evals:
        return None
    cols = min(4, len(evals))
    rows = -(-len(evals) // cols)
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, ev in zip(axes, evals, strict=False):
        cal = ev.fidelity.calibration
        full = [b for b in cal.bins if b.count]
        width = cal.bins[0].upper - cal.bins[0].lower
        ax.bar(
            [b.lower for b in full],
            [b.accuracy for b in full],
            width=width,
            align="edge",
            edgecolor="black",
            color="tab:blue",
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{ev.model}/{ev.variant}\nECE {cal.ece:.3f}", fontsize=9)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
    for ax in axes[len(evals) :]:
        ax.set_axis_off()
    fig.tight_layout()
    return png_bytes(fig)
