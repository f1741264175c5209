"""Turn a results dict into a verdict and a report folder.

`analyse` fills in the recommendation and the gates (from the run config's `gates:` section);
`write_report` writes, each file atomically:
    report.md, report.html (self-contained), results.json (the analysed results), plots/*.png
A reader sees first the verdict (gates), then the recommendation per target, the main table,
the plots, and last the per-host details.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from asc_deploy.config import GatesConfig
from asc_deploy.fsutil import write_json_atomic, write_text_atomic
from asc_deploy.report import plots, tables
from asc_deploy.report import results as R
from asc_deploy.report.document import (
    Block,
    Bullets,
    Heading,
    Image,
    Paragraph,
    to_markdown_document,
)
from asc_deploy.report.gates import (
    Scope,
    evaluate_gates,
    failure_lines,
    gates_config,
    load_baseline,
)
from asc_deploy.report.html import to_html_document
from asc_deploy.report.recommend import recommend


def analyse(
    results: dict[str, Any],
    config: GatesConfig | None = None,
    baseline: dict[str, Any] | None = None,
    scope: Scope = "recommended",
) -> dict[str, Any]:
    """A copy of `results` with 'recommendation' and 'gates' recomputed.

    `config` defaults to the run config's gates; `baseline` to the file gates.baseline names.
    """
    config = config or gates_config(results)
    if baseline is None:
        baseline = load_baseline(config)
    recommendation = recommend(results, config)
    gates = evaluate_gates(results, config, recommendation, baseline, scope)
    return {**results, "recommendation": recommendation, "gates": gates}


def _verdict(gates: list[dict[str, Any]]) -> list[Block]:
    failed = failure_lines(gates)
    if not gates:
        return [Paragraph("Verdict: PASS (no gates configured)", strong=True)]
    if not failed:
        return [Paragraph(f"Verdict: PASS ({len(gates)} of {len(gates)} gates)", strong=True)]
    return [
        Paragraph(f"Verdict: FAIL ({len(failed)} of {len(gates)} gates failed)", strong=True),
        Bullets(failed),
    ]


def _plot_shape(results: dict[str, Any], config: GatesConfig, host: str, provider: str):
    """The gate shape when that host/provider measured it, else its first measured shape."""
    shapes = [
        (m["batch"], m["sequence"])
        for m in R.measurements(results)
        if (m["host_label"], m["provider"]) == (host, provider)
    ]
    wanted = tuple(config.speedup_shape)
    return wanted if wanted in shapes else shapes[0]


def build_plots(results: dict[str, Any], config: GatesConfig) -> list[Image]:
    out: list[Image] = []
    targets = list(dict.fromkeys((m["host_label"], m["provider"]) for m in R.measurements(results)))
    for n, (host, provider) in enumerate(targets):
        batch, seq = _plot_shape(results, config, host, provider)
        png = plots.accuracy_vs_latency(results, host, provider, batch, seq)
        caption = (
            f"Accuracy vs p50 latency, {provider} {batch}x{seq} on {host} (Pareto frontier red)"
        )
        out.append(Image(f"plots/accuracy-latency-{n}-{provider}.png", caption, png))
    out.append(
        Image(
            "plots/accuracy-size.png", "Accuracy vs artifact size", plots.accuracy_vs_size(results)
        )
    )
    out.append(
        Image(
            "plots/similarity.png",
            "ASC layer similarity and each threshold's choice",
            plots.similarity_heatmap(results),
        )
    )
    for n, (host, provider) in enumerate(targets):
        batch, seq = _plot_shape(results, config, host, provider)
        for axis, fixed in (("batch", seq), ("sequence", batch)):
            png = plots.latency_scaling(results, host, provider, axis, fixed)
            out.append(
                Image(
                    f"plots/latency-{axis}-{n}-{provider}.png",
                    f"Latency vs {axis}, {provider} on {host}",
                    png,
                )
            )
    out.append(
        Image(
            "plots/reliability.png",
            "Reliability diagrams (diagonal: calibrated)",
            plots.reliability_diagrams(results),
        )
    )
    return [img for img in out if img.png is not None]


def _notes(results: dict[str, Any]) -> list[str]:
    notes = [
        f"{R.host_label(d.get('host', {}))}: {flag}"
        for d in results.get("bench", [])
        for flag in d.get("flags") or []
    ]
    for ev in results.get("evaluations", []):
        notes += [
            f"{ev['model']} {ev['variant']}: {note}"
            for note in (ev.get("fidelity") or {}).get("notes") or []
        ]
    return notes


def build_document(results: dict[str, Any], images: list[Image]) -> list[Block]:
    run, task = results.get("run") or {}, results.get("task") or {}
    blocks: list[Block] = [
        Heading(f"asc-deploy report: {run.get('name', 'run')} on {task.get('name', 'task')}", 1),
        *_verdict(results.get("gates", [])),
        tables.gates_table(results.get("gates", [])),
        tables.recommendation_table(results, results.get("recommendation", {})),
        tables.main_table(results),
    ]
    if images:
        blocks += [Heading("Plots"), *images]
    blocks.append(Heading("Details"))
    blocks += [tables.latency_table(results, h["label"]) for h in R.hosts(results)]
    blocks += [tables.strategy_table(results), tables.hosts_table(results)]
    notes = _notes(results)
    if notes:
        blocks += [Heading("Notes", 3), Bullets(notes)]
    blocks.append(
        Paragraph(
            f"Task {task.get('name')} ({task.get('eval_examples', '?')} evaluation examples; "
            f"{task.get('data_note', '')}). "
            f"Run {run.get('started', '?')} to {run.get('finished', '?')}"
            f", config hash {str(run.get('config_hash', '?'))[:12]}."
        )
    )
    return blocks


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; match a normal open()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_report(
    results: dict[str, Any],
    output_dir: str | Path,
    config: GatesConfig | None = None,
    baseline: dict[str, Any] | None = None,
    scope: Scope = "recommended",
    with_plots: bool = True,
) -> dict[str, Path]:
    """Analyse `results` and write the report folder; returns {"report.md": path, ...}.

    `results["bench"]` may hold bench documents from several hosts (see results.merge_bench).
    `with_plots=False` skips the figures (about 2 s), for a CI step that only wants the verdict.
    """
    output_dir = Path(output_dir)
    analysed = analyse(results, config, baseline, scope)
    images = build_plots(analysed, config or gates_config(analysed)) if with_plots else []
    blocks = build_document(analysed, images)
    paths: dict[str, Path] = {}
    for img in images:
        paths[img.filename] = output_dir / img.filename
        _write_bytes_atomic(paths[img.filename], img.png)
    title = f"asc-deploy report: {(analysed.get('run') or {}).get('name', 'run')}"
    paths["report.md"] = output_dir / "report.md"
    write_text_atomic(paths["report.md"], to_markdown_document(blocks))
    paths["report.html"] = output_dir / "report.html"
    write_text_atomic(paths["report.html"], to_html_document(blocks, title))
    # results.json last: its presence means the whole report was written.
    paths["results.json"] = output_dir / "results.json"
    write_json_atomic(paths["results.json"], analysed)
    return paths
