"""The serving-scenario part of the report: a table of ratios and a p99-vs-offered-QPS plot.

Both read bench.json `scenarios` records (asc_deploy.measure.scenarios). An INVALID LoadGen
result is shown as the word INVALID, never as a number.
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from asc_deploy.measure.scenarios import METRICS, scenario_ratios

COLUMNS = (
    "model",
    "variant",
    "SingleStream p90 ms",
    "vs ref",
    "Server QPS at bound",
    "vs ref",
    "Offline samples/s",
    "vs ref",
)


def table_rows(
    records: list[dict[str, Any]], reference: tuple[str, str], provider: str = "cpu"
) -> list[list[str]]:
    """Rows under COLUMNS: each scenario's value and its ratio to `reference`, as text."""
    rows = []
    for r in scenario_ratios(records, reference, provider):
        cells = [r["model"], r["variant"]]
        for metric in METRICS.values():
            cells.append(_value(r[metric], r[f"{metric}_validity"]))
            ratio = r[f"{metric}_ratio"]
            cells.append("" if ratio is None else f"{ratio:.2f}x")
        rows.append(cells)
    return rows


AGREEMENT_COLUMNS = (
    "model",
    "variant",
    "LoadGen p90 ms",
    "harness p90 ms before / during / after",
    "SUT adds",
    "vs harness loops",
    "noise",
    "agrees",
)


def agreement_rows(records: list[dict[str, Any]], provider: str = "cpu") -> list[list[str]]:
    """SingleStream p90 next to the harness's batch-1 p90 of the same queries in the same
    process (measure.scenarios.harness_agreement), under AGREEMENT_COLUMNS."""
    rows = []
    for r in records:
        check = r.get("harness_check")
        if r["scenario"] != "SingleStream" or r["provider"] != provider or not check:
            continue
        before, after = check["harness_p90_ms"]
        harness = " / ".join(f"{v:.2f}" for v in (before, check["model_p90_during_ms"], after))
        adds = "-"
        if check["sut_overhead_ms"] is not None:
            adds = f"{check['sut_overhead_ms']:.3f} ms ({_percent(check['sut_overhead'])})"
        rows.append(
            [
                r["model"],
                r["variant"],
                _value(r["value"], r["validity"]),
                harness,
                adds,
                _percent(check["difference_vs_loops"]),
                f"±{100 * check['tolerance']:.0f}%",
                {True: "yes", False: "no", None: r["validity"]}[check["within_noise"]],
            ]
        )
    return rows


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:+.1f}%"


def _value(value: float | None, validity: str | None) -> str:
    if validity is None:
        return "-"
    if value is None:
        return validity  # INVALID: LoadGen's verdict, not a number
    return f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"  # 77,914 rather than 7.791e+04


def p99_vs_qps_png(records: list[dict[str, Any]], provider: str = "cpu") -> bytes | None:
    """p99 latency against offered (target) QPS of every Server run, one line per artifact.

    Filled markers are LoadGen-VALID runs, hollow ones INVALID; the dashed line is the bound.
    None when there is no Server record on `provider`.
    """
    servers = [r for r in records if r["scenario"] == "Server" and r["provider"] == provider]
    if not servers:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for record in servers:
        runs = sorted(
            (p for p in record["runs"] if p["p99_ms"] is not None), key=lambda p: p["target_qps"]
        )
        if not runs:
            continue
        label = f"{record['model']}/{record['variant']}"
        (line,) = ax.plot([p["target_qps"] for p in runs], [p["p99_ms"] for p in runs], label=label)
        for p in runs:
            valid = p["validity"] == "VALID"
            ax.scatter(
                p["target_qps"],
                p["p99_ms"],
                color=line.get_color(),
                facecolors=line.get_color() if valid else "none",
                zorder=3,
            )
    for bound in sorted({r["latency_bound_ms"] for r in servers}):
        ax.axhline(bound, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"p99 bound {bound:g} ms", (0, bound), xycoords=("axes fraction", "data"))
    ax.set_yscale("log")  # past saturation p99 grows by orders of magnitude
    ax.set_xlabel("offered load (LoadGen target QPS)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title(f"Server scenario on {provider}: filled VALID, hollow INVALID")
    ax.legend(fontsize="small")
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()
