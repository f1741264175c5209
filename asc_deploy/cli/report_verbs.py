"""`asc-deploy report`: results.json (+ bench.json from other hosts) -> report folder + verdict.

Exit codes: 0 all gates pass; 1 a gate failed (one line per violated gate on stderr);
2 a user error (missing/invalid file, unknown schema version), printed as one line; 3 no gate
failed but one was inconclusive (its measurement noisy even after re-measuring).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def report(
    results_file: Annotated[Path, typer.Argument(help="results.json written by `asc-deploy run`.")],
    bench: Annotated[
        list[Path] | None,
        typer.Option(
            "--bench",
            help="A bench.json from another host, or a bench-merge set, to merge (repeatable).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Report folder (default: <results folder>/report)."),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(help="Previous results.json: the release baseline for latency regression."),
    ] = None,
    accuracy_scope: Annotated[
        str,
        typer.Option(help="What the accuracy/size gates check: 'recommended' or 'asc' (all)."),
    ] = "recommended",
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Draw the figures (about 2 s).")
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the gates and recommendation as JSON.")
    ] = False,
) -> None:
    """Write report.md, report.html, results.json and plots; exit 1 if a release gate fails."""
    from rich.console import Console

    from asc_deploy.errors import UserError
    from asc_deploy.fsutil import check_writable
    from asc_deploy.records import load_bench_runs, load_results
    from asc_deploy.report import results as R
    from asc_deploy.report.gates import exit_code, failure_lines, gates_config, load_baseline
    from asc_deploy.report.reconcile import reconcile
    from asc_deploy.report.render import REPORT_FILES, write_report
    from asc_deploy.report.tables import gates_table, recommendation_table, to_rich

    if accuracy_scope not in ("recommended", "asc"):
        raise UserError(f"--accuracy-scope '{accuracy_scope}' must be 'recommended' or 'asc'")
    out_dir = output or results_file.parent / "report"
    check_writable(out_dir)  # a read-only -o: one line before the analysis and the plots
    runs = [(run, str(path)) for path in bench or [] for run in load_bench_runs(path)]
    results = R.merge_bench(load_results(results_file), runs)
    reconcile(results, str(results_file))  # an edited metric is refused, not believed
    config = gates_config(results)
    base = load_baseline(config, baseline)
    analysed = write_report(results, out_dir, config, base, accuracy_scope, plots)  # type: ignore[arg-type]
    if as_json:
        doc = analysed.dump()
        report_files = {name: str(out_dir / name) for name in REPORT_FILES}
        summary = {"gates": doc["gates"], "recommendation": doc["recommendation"]}
        print(json.dumps({**summary, "report": report_files}, indent=2))
    else:
        console = Console()
        console.print(to_rich(gates_table(analysed.gates)))
        console.print(to_rich(recommendation_table(analysed, analysed.recommendation)))
        console.print(f"report: {out_dir / 'report.html'}")
    failed = failure_lines(analysed.gates)
    for line in failed:
        print(line, file=sys.stderr)
    if failed:
        # SystemExit rather than typer.Exit: with standalone_mode=False click *returns*
        # typer.Exit's code instead of raising it, and the entry point would exit 0.
        raise SystemExit(exit_code(analysed.gates))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
