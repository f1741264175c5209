"""Turn a run's Results into a verdict and a report folder.

`analyse` fills in the recommendation and the gates (from the run config's `gates:` section);
`write_report` writes, each file atomically:
    report.md, report.html (self-contained), results.json (Results.dump()), plots/*.png
A reader sees first the verdict (gates), then the recommendation per target with what decided
it (report/decision.py's rule) and the evaluation set's power, the main table, the plots, and
last the per-host details.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from asc_deploy.config import GatesConfig
from asc_deploy.fsutil import staged_files, write_json_atomic, write_text_atomic
from asc_deploy.measure.scenarios import reference_variant
from asc_deploy.records import Gate, Results, host_label, validate
from asc_deploy.report import plots, tables
from asc_deploy.report import results as R
from asc_deploy.report import scenarios as serving
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
from asc_deploy.report.recommend import decision_lines, power_line, recommend
from asc_deploy.report.widths import depth_width_table

REPORT_FILES = ("report.md", "report.html", "results.json")


def analyse(
    results: Results,
    config: GatesConfig | None = None,
    baseline: Results | None = None,
    scope: Scope = "recommended",
) -> Results:
    """A copy of `results` with its recommendation and gates recomputed.

    The copy is validated afresh, so deltas follow the metrics even when a caller changed an
    evaluation after reading. `config` defaults to the run config's gates; `baseline` to the
    file gates.baseline names.
    """
    results = validate(Results, results.dump(), "results")
    config = config or gates_config(results)
    if baseline is None:
        baseline = load_baseline(config)
    recommendation = recommend(results, config)
    gates = evaluate_gates(results, config, recommendation, baseline, scope)
    return results.model_copy(update={"recommendation": recommendation, "gates": gates})


def _verdict(gates: list[Gate]) -> list[Block]:
    failed = failure_lines(gates)
    if not gates:
        return [Paragraph("Verdict: PASS (no gates configured)", strong=True)]
    if not failed:
        return [Paragraph(f"Verdict: PASS ({len(gates)} of {len(gates)} gates)", strong=True)]
    doubtful = sum(g.inconclusive for g in gates)
    if doubtful == len(failed):  # nothing failed outright: the measurements decide nothing
        verdict = f"Verdict: INCONCLUSIVE ({doubtful} of {len(gates)} gates on noisy measurements)"
    else:
        verdict = f"Verdict: FAIL ({len(failed) - doubtful} of {len(gates)} gates failed)"
    return [Paragraph(verdict, strong=True), Bullets(failed)]


def _plot_shape(results: Results, config: GatesConfig, host: str, provider: str) -> tuple[int, int]:
    """The gate shape when that host/provider measured it, else its first measured shape."""
    shapes = [
        m.shape for m in R.measurements(results) if (m.host_label, m.provider) == (host, provider)
    ]
    wanted = tuple(config.speedup_shape)
    return wanted if wanted in shapes else shapes[0]


def build_plots(results: Results, config: GatesConfig) -> list[Image]:
    out: list[Image] = []
    targets = list(dict.fromkeys((m.host_label, m.provider) for m in R.measurements(results)))
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
    for n, (host, provider, records) in enumerate(_served(results)):
        png = serving.p99_vs_qps_png(records, provider)
        caption = f"Server scenario: p99 latency vs offered load, {provider} on {host}"
        out.append(Image(f"plots/server-p99-{n}-{provider}.png", caption, png))
    return [img for img in out if img.png is not None]


def _served(results: Results) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(host label, provider, LoadGen scenario records) of each bench run that served any."""
    return [
        (host_label(run.host), provider, run.scenarios)
        for run in results.bench
        for provider in dict.fromkeys(r["provider"] for r in run.scenarios)
    ]


def scenario_tables(results: Results) -> list[tables.Table]:
    """The serving scenarios of each host and provider, as ratios to the uncompressed model."""
    out = []
    reference = results.reference().name
    for host, provider, records in _served(results):
        variant = reference_variant(records, reference, provider)
        note = (
            f"Ratios against {reference} {variant}: lower is better for SingleStream p90, higher "
            "for Server QPS at the p99 bound and Offline samples/s; INVALID is LoadGen's verdict."
        )
        out.append(
            tables.Table(
                f"Serving scenarios (MLPerf LoadGen) on {host}, {provider}",
                list(serving.COLUMNS),
                serving.table_rows(records, (reference, variant), provider),
                note,
            )
        )
        agreement = serving.agreement_rows(records, provider)
        if agreement:
            out.append(
                tables.Table(
                    f"SingleStream vs the harness on {host}, {provider}",
                    list(serving.AGREEMENT_COLUMNS),
                    agreement,
                    AGREEMENT_NOTE,
                    marks={(i, 7): "fail" for i, row in enumerate(agreement) if row[7] == "no"},
                )
            )
    return out


AGREEMENT_NOTE = (
    "The harness's batch-1 loop ran before and after LoadGen's SingleStream test in the same "
    "process over the same queries, each at its own length; 'during' is the same clock around "
    "the model calls inside the SUT while LoadGen ran. SUT adds: LoadGen's p90 over the model's "
    "at the same moments. It agrees when that is within the harness's noise (the larger of the "
    "bench's noise threshold and the two loops' spread); 'vs harness loops' moves with the host."
)


def _notes(results: Results) -> list[str]:
    notes = [f"{host_label(run.host)}: {flag}" for run in results.bench for flag in run.flags]
    for ev in results.evaluations:
        if ev.fidelity is not None:
            notes += [f"{ev.model} {ev.variant}: {note}" for note in ev.fidelity.notes]
    return notes


def _similarity_scale(results: Results) -> list[Block]:
    """The range of adjacent-layer similarities next to the thresholds: a threshold above the
    largest value removes nothing, whatever the paper used."""
    sim = results.similarity
    if sim is None or len(sim.matrix) < 2:
        return []
    adjacent = [sim.matrix[k - 1][k] for k in range(1, len(sim.matrix))]
    thresholds = ", ".join(sorted(sim.selections, key=float, reverse=True)) or "none"
    text = (
        f"ASC similarity of adjacent layers on this model: {min(adjacent):.3f} to "
        f"{max(adjacent):.3f}; thresholds {thresholds}."
    )
    for target in sim.depth_targets:
        if target.layers is None:
            text += f" ASC at {target.count} removed: {target.reason}."
        else:
            layers = ", ".join(map(str, target.layers))
            text += f" ASC at {target.count} removed: t={target.threshold:.4f}, layers {layers}."
    return [Paragraph(text)]


def _decision(results: Results, config: GatesConfig) -> list[Block]:
    """Under the recommendation: the rule it was decided on, the numbers that decided it, and
    whether the evaluation set can resolve a drop as small as the budget."""
    lines = decision_lines(results, config)
    power = power_line(results, config)
    return [Bullets(lines + ([power] if power else []))] if lines or power else []


def build_document(results: Results, images: list[Image], config: GatesConfig) -> list[Block]:
    run, task = results.run, results.task
    blocks: list[Block] = [
        Heading(f"asc-deploy report: {run.name} on {task.name}", 1),
        *_verdict(results.gates),
        tables.gates_table(results.gates),
        tables.recommendation_table(results, results.recommendation),
        *_decision(results, config),
        tables.main_table(results),
    ]
    every_metric = tables.metrics_table(results)
    if every_metric is not None:
        blocks.append(every_metric)
    blocks += [tables.layer_choice_table(results), *_similarity_scale(results)]
    depth_width = depth_width_table(results)
    if depth_width is not None:
        blocks.append(depth_width)
    screening = tables.screening_table(results)
    if screening is not None:
        blocks.append(screening)
    if images:
        blocks += [Heading("Plots"), *images]
    blocks.append(Heading("Details"))
    blocks += [tables.latency_table(results, label) for label in R.host_labels(results)]
    blocks += scenario_tables(results)
    blocks.append(tables.hosts_table(results))
    compute = tables.compute_table(results)
    if compute is not None:
        blocks.append(compute)
    notes = _notes(results)
    if notes:
        blocks += [Heading("Notes", 3), Bullets(notes)]
    data_note = f"; {task.data_note}" if task.data_note else ""
    if task.eval_holdout is not None:
        data_note += f"; {task.eval_holdout.examples} eval-holdout examples from its training split"
    blocks.append(
        Paragraph(
            f"Task {task.name} ({task.eval_examples} evaluation examples{data_note}). "
            f"Run {run.started} to {run.finished}, config hash {run.config_hash[:12]}."
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
    results: Results,
    output_dir: str | Path,
    config: GatesConfig | None = None,
    baseline: Results | None = None,
    scope: Scope = "recommended",
    with_plots: bool = True,
) -> Results:
    """Analyse `results`, write the report folder, and return the analysed results.

    The folder holds REPORT_FILES and plots/*.png. `results.bench` may hold bench runs from
    several hosts (see results.merge_bench). `with_plots=False` skips the figures (about 2 s),
    for a CI step that only wants the verdict.
    """
    analysed = analyse(results, config, baseline, scope)
    config = config or gates_config(analysed)
    images = build_plots(analysed, config) if with_plots else []
    blocks = build_document(analysed, images, config)
    title = f"asc-deploy report: {analysed.run.name}"
    # Every file staged first, so a full disk leaves no plots without report.md; results.json
    # moves in last: its presence means the whole report was written.
    with staged_files(output_dir, last="results.json") as staged:
        for img in images:
            _write_bytes_atomic(staged / img.filename, img.png)
        write_text_atomic(staged / "report.md", to_markdown_document(blocks))
        write_text_atomic(staged / "report.html", to_html_document(blocks, title))
        write_json_atomic(staged / "results.json", analysed.dump())
    return analysed
