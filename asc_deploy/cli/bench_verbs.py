"""`asc-deploy bench` and `asc-deploy bench-merge`.

Works on a host with only onnxruntime: nothing here or on the harness path imports torch or
transformers (PyTorch variants, with --torch, are timed inside their own worker processes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option
Targets = Annotated[list[str], typer.Argument(help="Artifact folders, .onnx files or globs.")]
Providers = Annotated[list[str] | None, Opt("--provider", "-p", help="cpu/cuda/tensorrt (repeat).")]
Batches = Annotated[list[int] | None, Opt("--batch", "-b", help="Batch size (repeat).")]
Seqs = Annotated[list[int] | None, Opt("--seq", "-s", help="Sequence length (repeat).")]
Inputs = Annotated[str | None, Opt("--inputs", help="fixed, or real (the artifact's samples).")]
Threads = Annotated[int | None, Opt("--threads", help="Intra-op threads (default: cores).")]
InterOp = Annotated[int | None, Opt("--inter-op-threads", help="Inter-op threads (default 1).")]
Warmup = Annotated[int | None, Opt("--warmup", help="Untimed calls first (default 5).")]
MinIter = Annotated[int | None, Opt("--min-iterations", help="At least this many (default 20).")]
MinSec = Annotated[float | None, Opt("--min-seconds", help="And at least this long (default 1).")]
Rounds = Annotated[int | None, Opt("--rounds", help="Interleaved rounds A B C A B C (default 3).")]
Noise = Annotated[
    float | None, Opt("--noise-threshold", help="Round p50 spread flagged noisy (default 0.10).")
]
Retries = Annotated[int | None, Opt("--noise-retries", help="Re-measure noisy cells (default 2).")]
TorchDir = Annotated[Path | None, Opt("--torch", help="Also time this PyTorch model folder.")]
Config = Annotated[Path | None, Opt("--config", help="Run config YAML: its bench section.")]
Output = Annotated[Path, Opt("--output", "-o", help="Where bench.json goes.")]
Json = Annotated[bool, Opt("--json", help="Print the result as JSON.")]
Scenario = Annotated[
    list[str] | None,
    Opt("--scenario", help="SingleStream/Server/Offline with MLPerf LoadGen (repeat)."),
]
Bound = Annotated[float | None, Opt("--latency-bound-ms", help="Server: p99 bound (ms).")]
TargetQps = Annotated[float | None, Opt("--target-qps", help="Server: one rate, no search.")]
ScenarioSec = Annotated[float | None, Opt("--scenario-seconds", help="LoadGen min duration.")]
MinQueries = Annotated[int | None, Opt("--min-queries", help="LoadGen min query count.")]
MaxBatch = Annotated[int | None, Opt("--max-batch-size", help="Server dynamic batching.")]
QueueDelay = Annotated[float | None, Opt("--max-queue-delay-ms", help="Server batch wait (ms).")]
Instances = Annotated[int | None, Opt("--instances", help="Server sessions, a thread each.")]
LoadgenLogs = Annotated[Path | None, Opt("--loadgen-logs", help="Keep LoadGen's logs here.")]


def bench(
    targets: Targets,
    provider: Providers = None,
    batch: Batches = None,
    seq: Seqs = None,
    inputs: Inputs = None,
    threads: Threads = None,
    inter_op_threads: InterOp = None,
    warmup: Warmup = None,
    min_iterations: MinIter = None,
    min_seconds: MinSec = None,
    rounds: Rounds = None,
    noise_threshold: Noise = None,
    noise_retries: Retries = None,
    torch_dir: TorchDir = None,
    config: Config = None,
    output: Output = Path("bench.json"),
    as_json: Json = False,
    scenario: Scenario = None,
    latency_bound_ms: Bound = None,
    target_qps: TargetQps = None,
    scenario_seconds: ScenarioSec = None,
    min_queries: MinQueries = None,
    max_batch_size: MaxBatch = None,
    max_queue_delay_ms: QueueDelay = None,
    instances: Instances = None,
    loadgen_logs: LoadgenLogs = None,
) -> None:
    """Latency, throughput and memory of ONNX artifacts, each measurement in a fresh process.

    Defaults come from the run config's bench section (--config) or BenchConfig's defaults;
    options given here override them. With --scenario, MLPerf LoadGen runs the serving
    scenarios on the artifacts' real queries instead of the batch x sequence grid.
    """
    from asc_deploy.config import BenchConfig, load_run_config
    from asc_deploy.fsutil import check_output_file
    from asc_deploy.measure import harness

    check_output_file(output)
    if torch_dir is not None:
        _check_torch_folder(torch_dir)
    base = load_run_config(config).bench if config is not None else BenchConfig()
    settings = harness.BenchSettings.from_config(
        base,
        providers=tuple(provider) if provider else None,
        batch_sizes=tuple(batch) if batch else None,
        sequence_lengths=tuple(seq) if seq else None,
        inputs=inputs,
        intra_op_threads=threads,
        inter_op_threads=inter_op_threads,
        warmup=warmup,
        min_iterations=min_iterations,
        min_seconds=min_seconds,
        rounds=rounds,
        noise_threshold=noise_threshold,
        noise_retries=noise_retries,
    ).validated()
    scenarios = None
    if scenario:
        from asc_deploy.measure import scenarios as scen

        scenarios = scen.scenario_config(
            base.scenarios,
            run=scenario,
            latency_bound_ms=latency_bound_ms,
            server_target_qps=target_qps,
            min_duration_s=scenario_seconds,
            min_query_count=min_queries,
            max_batch_size=max_batch_size,
            max_queue_delay_ms=max_queue_delay_ms,
            server_instances=instances,
            log_dir=loadgen_logs,
        )
    resolved = harness.resolve_targets(targets)
    if torch_dir is not None:
        resolved += harness.torch_targets(torch_dir)
    if scenarios is not None:
        doc = _run_scenarios(resolved, settings, scenarios, quiet=as_json)
    else:
        doc = _run_with_progress(harness, resolved, settings, quiet=as_json)
    harness.write_bench(doc, output)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    elif scenarios is not None:
        _print_scenarios(doc, output)
    else:
        _print_table(doc, output)


def bench_merge(
    inputs: Annotated[list[Path], typer.Argument(help="bench.json files (from any hosts).")],
    output: Output = Path("bench-merged.json"),
    as_json: Json = False,
) -> None:
    """Merge several bench.json files into one set, each run tagged by its host fingerprint."""
    from rich.console import Console

    from asc_deploy.errors import UserError
    from asc_deploy.fsutil import check_output_file
    from asc_deploy.measure import harness

    check_output_file(output)
    for path in inputs:  # every other verb refuses to write over its input; so does this one
        if path.resolve() == output.resolve():
            raise UserError(
                f"output {output} is one of the inputs; merge into another file (-o merged.json)"
            )
    merged = harness.merge_bench([(_measured(harness.load_bench(p), p), p) for p in inputs])
    harness.write_bench(merged, output)
    if as_json:
        typer.echo(json.dumps(merged, indent=2))
    else:
        Console().print(
            f"merged {len(merged['runs'])} run(s) from {len(merged['hosts'])} host(s) -> {output}"
        )


def _check_torch_folder(folder: Path) -> None:
    """--torch takes a PyTorch model folder: not an ONNX artifact, not a folder without weights."""
    from asc_deploy.errors import UserError

    if (folder / "model.onnx").is_file():
        raise UserError(
            f"--torch {folder} is an ONNX artifact; pass it as a target, and --torch the "
            "PyTorch model folder it was exported from"
        )
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    if folder.is_dir() and not any((folder / name).is_file() for name in weights):
        raise UserError(f"--torch {folder} has no model weights ({' / '.join(weights)})")


def _measured(doc: dict, path: Path) -> dict:
    """A bench document whose every run holds measurements or LoadGen scenarios (`bench
    --scenario` writes scenarios only; the report rejects a run with neither)."""
    from asc_deploy.errors import UserError

    runs = doc.get("runs", [doc])
    for run in runs:
        measured = run.get("measurements") or run.get("scenarios")
        if not isinstance(run.get("host"), dict) or not measured:
            raise UserError(
                f"{path} holds a run without measurements or scenarios (or without its host); "
                "merge bench.json files written by `asc-deploy bench`"
            )
    return doc


def _run_with_progress(harness, targets, settings, quiet: bool) -> dict:
    from rich.console import Console

    console = Console(stderr=True, quiet=quiet)
    with console.status("benchmarking") as status:
        return harness.run_bench(targets, settings, progress=lambda text: status.update(text))


def _run_scenarios(targets, settings, config, quiet: bool) -> dict:
    from rich.console import Console

    from asc_deploy.measure import scenarios as scen

    console = Console(stderr=True, quiet=quiet)
    with console.status("LoadGen") as status:
        records = scen.run_scenarios(targets, settings, config, lambda text: status.update(text))
    return scen.bench_document(records, settings, config)


def _print_scenarios(doc: dict, output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"serving scenarios (MLPerf LoadGen) -> {output}")
    for column in ("model", "variant", "provider", "scenario", "result", "value", "p99 ms"):
        table.add_column(column)
    for r in doc["scenarios"]:
        unit = {"SingleStream": "ms p90", "Server": "QPS", "Offline": "/s"}[r["scenario"]]
        value = "INVALID" if r["value"] is None else f"{r['value']:g} {unit}"
        if r["scenario"] == "Server":
            value += f" @ p99<={r['latency_bound_ms']:g}ms"
        p99 = (r["latency_ms"] or {}).get("p99")
        table.add_row(
            r["model"],
            r["variant"],
            r["provider"],
            r["scenario"],
            r["validity"],
            value,
            "" if p99 is None else f"{p99:.3f}",
        )
    console = Console()
    console.print(table)
    for flag in doc["flags"]:
        console.print(f"[yellow]flag:[/yellow] {flag}")


def _print_table(doc: dict, output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench ({doc['settings']['intra_op_threads']} threads) -> {output}")
    for column in (
        "model",
        "variant",
        "provider",
        "batch",
        "seq",
        "p50 ms",
        "p90 ms",
        "ex/s",
        "peak RSS MB",
        "noisy",
    ):
        table.add_column(column)
    for m in doc["measurements"]:
        lat = m["latency_ms"]
        table.add_row(
            m["model"],
            m["variant"],
            m["provider"],
            str(m["batch"]),
            str(m["sequence"]),
            f"{lat['p50']:.3f}",
            f"{lat['p90']:.3f}",
            f"{m['throughput_per_s']:.1f}",
            f"{m['memory_mb']['peak_rss']:.0f}",
            "yes" if m["noisy"] else "",
        )
    console = Console()
    console.print(table)
    for flag in doc["flags"]:
        console.print(f"[yellow]flag:[/yellow] {flag}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
    app.command("bench-merge")(bench_merge)
