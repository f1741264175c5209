"""The benchmark harness: plan targets x providers x batch x sequence, measure, write bench.json.

Every measurement runs in a fresh worker process (`asc_deploy.measure.worker`), so one variant's
memory and caches cannot leak into the next. Variants are measured in interleaved rounds
(A B C, A B C, ...) so machine noise hits all of them alike; the load average is recorded around
each round. Before round one the host settles, and every round also times a bare `session.run`
loop (asc_deploy.measure.noise): a cell whose per-round p50s spread more than the threshold that
loop calibrates is measured again (at most `noise_retries` more rounds, keeping the latest
`rounds`), and flagged noisy if it still spreads.

Imports neither torch nor transformers: PyTorch variants are timed inside their own worker.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from asc_deploy.errors import UserError
from asc_deploy.fsutil import hash_json, read_json, utc_now, write_json_atomic
from asc_deploy.manifest import MANIFEST, MODEL_FILE, SAMPLE_INPUTS, verify_artifact
from asc_deploy.measure import noise, system
from asc_deploy.measure.flops import GraphStats, flops_per_example, graph_stats
from asc_deploy.measure.latency import relative_spread, summarize_ms, throughput_per_s
from asc_deploy.providers import canonical_provider

SCHEMA = "asc-deploy.bench/1"
MERGED_SCHEMA = "asc-deploy.bench-set/1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BenchSettings:
    providers: tuple[str, ...] = ("cpu",)
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    sequence_lengths: tuple[int, ...] = (32, 128)
    inputs: str = "fixed"
    intra_op_threads: int | None = None  # None: physical cores
    inter_op_threads: int = 1
    warmup: int = 5
    min_iterations: int = 20
    min_seconds: float = 1.0
    rounds: int = 3
    # Round-to-round p50 spread that marks a cell noisy, at least (measure/noise.py may raise it).
    noise_threshold: float = 0.10
    noise_retries: int = 2  # extra rounds for cells that are still noisy
    tensorrt_fp16: bool = True
    worker_timeout_s: float = 900.0

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> BenchSettings:
        """From a `BenchConfig`; `overrides` that are None keep the config's value."""
        base = cls(
            providers=tuple(config.providers),
            batch_sizes=tuple(config.batch_sizes),
            sequence_lengths=tuple(config.sequence_lengths),
            inputs=config.inputs,
            intra_op_threads=config.intra_op_threads,
            inter_op_threads=config.inter_op_threads,
            warmup=config.warmup,
            min_iterations=config.min_iterations,
            min_seconds=config.min_seconds,
            rounds=config.rounds,
            noise_threshold=config.noise_threshold,
            noise_retries=config.noise_retries,
            tensorrt_fp16=config.tensorrt_fp16,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def validated(self) -> BenchSettings:
        """Reject impossible values with a UserError; fill in the thread count."""
        checks = [
            (
                self.inputs in ("fixed", "real"),
                f"--inputs must be fixed or real, not {self.inputs}",
            ),
            (self.providers, "give at least one --provider"),
            (all(b >= 1 for b in self.batch_sizes) and self.batch_sizes, "--batch must be >= 1"),
            (
                all(s >= 1 for s in self.sequence_lengths) and self.sequence_lengths,
                "--seq must be >= 1",
            ),
            (self.warmup >= 0, "--warmup must be >= 0"),
            (self.min_iterations >= 1, "--min-iterations must be >= 1"),
            (self.min_seconds >= 0, "--min-seconds must be >= 0"),
            (self.rounds >= 1, "--rounds must be >= 1"),
            (0 < self.noise_threshold < 1, "--noise-threshold must be between 0 and 1"),
            (self.noise_retries >= 0, "--noise-retries must be >= 0"),
            (self.inter_op_threads >= 1, "--inter-op-threads must be >= 1"),
            (self.intra_op_threads is None or self.intra_op_threads >= 1, "--threads must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        try:
            providers = tuple(dict.fromkeys(canonical_provider(p) for p in self.providers))
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        threads = self.intra_op_threads or system.physical_cores() or 1
        return replace(self, providers=providers, intra_op_threads=threads)

    def record(self) -> dict[str, Any]:
        """The `settings` block of bench.json (with a hash to tell runs apart)."""
        keys = (
            "intra_op_threads",
            "inter_op_threads",
            "warmup",
            "min_iterations",
            "min_seconds",
            "rounds",
            "inputs",
            "noise_threshold",
            "noise_retries",
        )
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["providers"] = list(self.providers)
        out["batch_sizes"] = list(self.batch_sizes)
        out["sequence_lengths"] = list(self.sequence_lengths)
        out["config_hash"] = hash_json(out)
        return out


@dataclass
class Target:
    """One thing to time: an ONNX artifact / bare .onnx file, or a PyTorch model folder."""

    label: str  # what the user passed (or the folder), shown in results
    model_path: Path
    model: str
    variant: str
    runtime: str = "onnxruntime"
    verified: bool = False  # manifest hashes checked
    sha256: str | None = None  # the manifest's hash of model.onnx: which graph was timed
    note: str | None = None
    size_bytes: int | None = None
    parameters: int | None = None
    max_positions: int | None = None
    vocab_size: int | None = None
    sample_inputs: Path | None = None
    stats: GraphStats | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Cell:
    target: Target
    provider: str
    batch: int
    sequence: int

    @property
    def key(self) -> str:
        t = self.target
        return f"{t.label}|{t.runtime}|{t.variant}|{self.provider}|{self.batch}|{self.sequence}"


# ---------------------------------------------------------------- targets


def resolve_targets(patterns: list[str]) -> list[Target]:
    """Artifact folders / .onnx files / globs of them -> verified targets; UserError if bad."""
    if not patterns:
        raise UserError("give at least one artifact folder or .onnx file to benchmark")
    paths: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise UserError(f"no artifact matches '{pattern}'; check the path or glob")
            paths.extend(Path(m) for m in matches)
        else:
            paths.append(Path(pattern))
    targets, seen = [], set()
    for path in paths:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        targets.append(onnx_target(path))
    return targets


def onnx_target(path: Path) -> Target:
    """An artifact folder (hashes verified) or a bare .onnx file (no manifest, not verified)."""
    if path.is_dir():
        if not (path / MODEL_FILE).is_file() and not (path / MANIFEST).is_file():
            raise UserError(f"{path} holds no {MODEL_FILE}; pass an artifact folder or .onnx file")
        manifest = verify_artifact(path)
        model_path = path / MODEL_FILE
        target = Target(
            label=str(path),
            model_path=model_path,
            model=str(manifest.get("name") or path.parent.name or path.name),
            variant=str(manifest.get("variant") or path.name),
            verified=True,
            sha256=(manifest.get("files") or {}).get(MODEL_FILE, {}).get("sha256"),
            size_bytes=model_path.stat().st_size,
            parameters=manifest.get("parameters"),
            sample_inputs=path / SAMPLE_INPUTS if (path / SAMPLE_INPUTS).is_file() else None,
        )
        target.max_positions = _config_max_positions(path / "config.json")
    elif path.is_file() and path.suffix == ".onnx":
        target = Target(
            label=str(path),
            model_path=path,
            model=path.stem,
            variant=path.stem,
            note="bare .onnx file: no manifest, file hashes not checked",
            size_bytes=path.stat().st_size,
        )
    elif path.exists():
        raise UserError(f"{path} is neither an artifact folder nor a .onnx file")
    else:
        raise UserError(f"bench target not found: {path}; pass an artifact folder or .onnx file")
    _add_graph_stats(target)
    return target


def torch_targets(model_dir: str | Path) -> list[Target]:
    """Eager fp32 and dynamic-int8 PyTorch variants of a model folder (timed in workers)."""
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if not config.is_file():
        raise UserError(f"--torch {model_dir}: not a model folder with config.json")
    limit = _config_max_positions(config)
    vocab = _read_config(config).get("vocab_size")
    return [
        Target(
            label=str(model_dir),
            model_path=model_dir,
            model=model_dir.name,
            variant=variant,
            runtime="torch",
            verified=False,
            note="PyTorch model folder",
            max_positions=limit,
            vocab_size=vocab,
        )
        for variant in ("torch", "torch-dynamic-int8")
    ]


def _add_graph_stats(target: Target) -> None:
    try:
        stats = graph_stats(target.model_path)
    except ImportError:  # a host with onnxruntime but no onnx package: no FLOPs estimate
        return
    except Exception as exc:
        raise UserError(f"{target.model_path} is not a readable ONNX model ({exc})") from exc
    target.stats = stats
    target.parameters = target.parameters or stats.parameters
    target.vocab_size = stats.vocab_size
    if target.max_positions is None:
        target.max_positions = stats.max_positions


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return read_json(path) if path.is_file() else {}
    except ValueError:
        return {}


def _config_max_positions(path: Path) -> int | None:
    config = _read_config(path)
    n = config.get("max_position_embeddings")
    if not isinstance(n, int):
        return None
    # RoBERTa-style position ids start after the padding index.
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert", "mpnet"):
        n -= int(config.get("pad_token_id", 1) or 1) + 1
    return n


# ---------------------------------------------------------------- plan


def plan_cells(targets: list[Target], settings: BenchSettings) -> list[Cell]:
    """Every target x provider x batch x sequence (PyTorch variants on CPU only)."""
    cells = []
    for target in targets:
        providers = ["cpu"] if target.runtime == "torch" else list(settings.providers)
        if target.runtime == "torch" and "cpu" not in settings.providers:
            continue  # PyTorch variants are CPU baselines; a GPU-only run leaves them out
        for provider in providers:
            for batch in settings.batch_sizes:
                for sequence in settings.sequence_lengths:
                    cells.append(Cell(target, provider, batch, sequence))
    return cells


def check_plan(cells: list[Cell], settings: BenchSettings) -> None:
    """Everything that can fail before a measurement starts fails here, with a UserError."""
    from asc_deploy.measure.ort_runner import resolve_provider

    if not cells:
        raise UserError("nothing to measure: no target x provider x shape combination")
    for provider in settings.providers:
        resolve_provider(provider)
    for cell in cells:
        t = cell.target
        if t.max_positions is not None and cell.sequence > t.max_positions:
            raise UserError(
                f"sequence {cell.sequence} is longer than {t.label} takes ({t.max_positions} "
                f"positions); pass --seq {t.max_positions} or less"
            )
        if settings.inputs == "real" and t.runtime == "onnxruntime" and t.sample_inputs is None:
            raise UserError(
                f"--inputs real needs {SAMPLE_INPUTS} in {t.label}; "
                "re-export it or use --inputs fixed"
            )


def _real_inputs_for(cells: list[Cell]) -> Path | None:
    """PyTorch variants borrow the first artifact's real examples."""
    return next((c.target.sample_inputs for c in cells if c.target.sample_inputs), None)


# ---------------------------------------------------------------- measuring


def worker_spec(cell: Cell, settings: BenchSettings, sample_inputs: Path | None) -> dict[str, Any]:
    t = cell.target
    return {
        "runtime": t.runtime,
        "model_path": str(t.model_path),
        "variant": t.variant,
        "provider": cell.provider,
        "batch": cell.batch,
        "sequence": cell.sequence,
        "inputs": settings.inputs,
        "sample_inputs": str(t.sample_inputs or sample_inputs)
        if settings.inputs == "real"
        else None,
        "vocab_size": t.vocab_size,
        "intra_op_threads": settings.intra_op_threads,
        "inter_op_threads": settings.inter_op_threads,
        "warmup": settings.warmup,
        "min_iterations": settings.min_iterations,
        "min_seconds": settings.min_seconds,
        # TensorRT builds engines for a shape range: cover every shape this run measures.
        "max_shape": [max(settings.batch_sizes), max(settings.sequence_lengths)],
        "tensorrt_fp16": settings.tensorrt_fp16,
    }


def run_worker(spec: dict[str, Any], timeout_s: float = 900.0) -> dict[str, Any]:
    """Run one spec in a fresh Python process; UserError / RuntimeError on failure."""
    env = dict(os.environ)
    threads = str(spec["intra_op_threads"])
    # OpenMP/MKL pools (PyTorch) size themselves from these before any code can set them.
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "asc_deploy.measure.worker"],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise UserError(
            f"measuring {spec['model_path']} took over {timeout_s:.0f} s; lower --min-seconds "
            "or --min-iterations"
        ) from exc
    result = _last_json_line(proc.stdout)
    if result is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"benchmark worker died (exit {proc.returncode}): {tail}")
    if not result["ok"]:
        if result.get("kind") == "user":
            raise UserError(result["error"])
        raise RuntimeError(
            f"benchmark worker failed: {result['error']}\n{result.get('traceback', '')}"
        )
    return result


def _last_json_line(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


Runner = Callable[[dict[str, Any], float], dict[str, Any]]
Progress = Callable[[str], None]


def run_bench(
    targets: list[Target],
    settings: BenchSettings,
    progress: Progress | None = None,
    runner: Runner = run_worker,
) -> dict[str, Any]:
    """Measure every planned cell in `settings.rounds` interleaved rounds -> bench.json document."""
    settings = settings.validated()
    cells = plan_cells(targets, settings)
    check_plan(cells, settings)
    sample_inputs = _real_inputs_for(cells)
    if settings.inputs == "real" and sample_inputs is None:
        raise UserError("--inputs real needs an artifact with sample_inputs.npz among the targets")
    host = system.host_info()
    measure = _measurer(settings, sample_inputs, runner, progress)
    settling = noise.settle(
        lambda: runner(noise.bare_spec(settings, min(settings.min_seconds, 0.3)), 120.0)
    )
    results: dict[str, list[dict]] = {c.key: [] for c in cells}
    bare: list[float] = []
    rounds = []
    started = utc_now()
    for r in range(settings.rounds):
        rounds.append(_round(r + 1, cells, measure, results, f"round {r + 1}/{settings.rounds}"))
        bare.append(noise.p50_ms(runner(noise.bare_spec(settings), 120.0)))
    noise_doc = noise.summary(bare, settling, settings.noise_threshold)
    threshold = noise_doc["threshold"]
    remeasured = {c.key: 0 for c in cells}
    for retry in range(settings.noise_retries):
        noisy = [c for c in cells if _spread(results[c.key], settings) > threshold]
        if not noisy:
            break
        rounds.append(_round(len(rounds) + 1, noisy, measure, results, f"re-measure {retry + 1}"))
        for cell in noisy:
            remeasured[cell.key] += 1
    measurements = [
        _aggregate(c, results[c.key][-settings.rounds :], threshold, remeasured[c.key], settings)
        for c in cells
    ]
    return {
        "schema": SCHEMA,
        "created": started,
        "host": host,
        "settings": settings.record(),
        "load_average": {"before": rounds[0]["load_before"], "after": rounds[-1]["load_after"]},
        "rounds": rounds,
        "noise": noise_doc,
        "flags": _flags(measurements, rounds, host, settings, noise_doc),
        "measurements": measurements,
    }


def _measurer(settings, sample_inputs, runner, progress):
    """cell, label -> the worker's result for one measurement of `cell`."""

    def measure(cell: Cell, label: str) -> dict[str, Any]:
        if progress:
            progress(f"{label}: {_describe(cell)}")
        return runner(worker_spec(cell, settings, sample_inputs), settings.worker_timeout_s)

    return measure


def _round(number: int, cells: list[Cell], measure, results: dict, label: str) -> dict[str, Any]:
    """Measure `cells` once each, in order, appending to `results`; the round's record."""
    before, t0 = system.load_average(), time.perf_counter()
    for i, cell in enumerate(cells):
        results[cell.key].append(measure(cell, f"{label}, {i + 1}/{len(cells)}"))
    return {
        "round": number,
        "load_before": before,
        "load_after": system.load_average(),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _spread(runs: list[dict[str, Any]], settings: BenchSettings) -> float:
    """The spread of the latest `rounds` p50s: a re-measured round replaces the oldest."""
    return relative_spread([summarize_ms(r["samples_s"])["p50"] for r in runs[-settings.rounds :]])


def _aggregate(
    cell: Cell,
    runs: list[dict[str, Any]],
    threshold: float,
    remeasured: int,
    settings: BenchSettings,
) -> dict[str, Any]:
    t = cell.target
    pooled = [s for run in runs for s in run["samples_s"]]
    round_p50 = [summarize_ms(run["samples_s"])["p50"] for run in runs]
    spread = relative_spread(round_p50)
    memory = {
        "peak_rss": max(run["memory_mb"]["peak_rss"] for run in runs),
        "rss_growth": max(run["memory_mb"]["rss_growth"] for run in runs),
        "peak_device": _max_or_none(run["memory_mb"].get("peak_device") for run in runs),
    }
    size = t.size_bytes if t.size_bytes is not None else runs[0].get("size_bytes")
    parameters = t.parameters if t.parameters is not None else runs[0].get("parameters")
    mean_seq = runs[0].get("mean_sequence", cell.sequence)
    flops = (
        flops_per_example(t.stats, round(mean_seq)) if t.stats else runs[0].get("flops_per_example")
    )
    return {
        "artifact": t.label,
        "model": t.model,
        "variant": t.variant,
        "runtime": t.runtime,
        "provider": cell.provider,
        "batch": cell.batch,
        "sequence": cell.sequence,
        "inputs": settings.inputs,
        "mean_sequence": mean_seq,
        "latency_ms": {k: round(v, 4) for k, v in summarize_ms(pooled).items()},
        "round_p50_ms": [round(v, 4) for v in round_p50],
        "round_p50_median_ms": round(float(np.median(round_p50)), 4),
        "round_spread": round(spread, 4),
        "iterations": len(pooled),
        "throughput_per_s": round(throughput_per_s(pooled, cell.batch), 3),
        "memory_mb": memory,
        "session_create_ms": round(float(np.median([r["session_create_ms"] for r in runs])), 3),
        "size_bytes": size,
        "parameters": parameters,
        "flops_per_example": flops,
        "verified": t.verified,
        "sha256": t.sha256,
        "note": t.note,
        "providers_in_use": runs[0].get("providers"),
        "remeasured": remeasured,
        "noisy": spread > threshold,
    }


def _flags(
    measurements: list[dict],
    rounds: list[dict],
    host: dict,
    settings: BenchSettings,
    noise_doc: dict[str, Any],
) -> list[str]:
    flags = []
    for m in measurements:
        if m["noisy"]:
            again = f", re-measured {m['remeasured']}x" if m["remeasured"] else ""
            flags.append(
                f"machine busy: round spread {m['round_spread']:.0%} > "
                f"{noise_doc['threshold']:.0%} for {m['model']}/{m['variant']} on {m['provider']}"
                f" (batch {m['batch']}, sequence {m['sequence']}{again})"
            )
    if noise_doc["host_busy"]:
        flags.append(
            f"machine busy: a bare session.run loop spread {noise_doc['floor']:.0%} across rounds"
            f" (> {noise.BUSY_FLOOR:.0%}); no latency from this run can be trusted"
        )
    cores = host["cpu"].get("logical_cores") or 1
    first = rounds[0]["load_before"]
    # Before anything of ours ran, a 1-minute load above half the cores means other work.
    if first and first[0] > 0.5 * cores:
        flags.append(f"machine busy: 1-min load average {first[0]} on {cores} cores before the run")
    if settings.rounds < 2:
        flags.append("one round only: noise cannot be assessed; use --rounds 3 or more")
    return flags


def _max_or_none(values) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _describe(cell: Cell) -> str:
    t = cell.target
    return f"{t.model}/{t.variant} [{cell.provider}] batch {cell.batch} seq {cell.sequence}"


# ---------------------------------------------------------------- files


def write_bench(doc: dict[str, Any], path: str | Path) -> None:
    """Atomic: an existing file is replaced only by a complete new one."""
    write_json_atomic(path, doc)


def load_bench(path: str | Path) -> dict[str, Any]:
    """A bench.json or a merged set; UserError for a missing file or unknown schema."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"bench file not found: {path}")
    try:
        doc = read_json(path)
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from exc
    schema = str(doc.get("schema", "")) if isinstance(doc, dict) else ""
    if schema not in (SCHEMA, MERGED_SCHEMA):
        raise UserError(f"{path}: unknown schema '{schema}' (this version reads {SCHEMA})")
    return doc


def check_host_name(named: dict[str, tuple[Any, Any]], host: dict[str, Any], source: Any) -> None:
    """Refuse a host fingerprint under a second hostname (`named`: fingerprint -> the first
    (hostname, source) seen): the report would label one machine's numbers with another's name."""
    fingerprint, hostname = host["fingerprint"], host.get("hostname")
    first = named.setdefault(fingerprint, (hostname, source))
    if first[0] != hostname:
        raise UserError(
            f"host fingerprint {fingerprint} is named {first[0]!r} in {first[1]} but "
            f"{hostname!r} in {source}; a fingerprint is one machine: merge the runs of "
            "the right host"
        )


def merge_bench(docs: list[dict[str, Any] | tuple[dict[str, Any], Any]]) -> dict[str, Any]:
    """Several bench.json documents (from any hosts, or earlier merges) -> one bench set; each
    may come as (document, where it was read) so that a conflict names the file.

    Each run stays whole (its host, settings and flags belong to its numbers); identical runs
    given twice are kept once. Runs are ordered by host fingerprint, then creation time. One
    fingerprint under two host names is refused: the report would label one host's numbers
    with the other's name.
    """
    runs, seen, named = [], set(), {}
    for item in docs:
        doc, source = item if isinstance(item, tuple) else (item, "a bench document")
        for run in doc["runs"] if doc.get("schema") == MERGED_SCHEMA else [doc]:
            check_host_name(named, run["host"], source)
            key = hash_json(run)
            if key not in seen:
                seen.add(key)
                runs.append(run)
    if not runs:
        raise UserError("nothing to merge: give one or more bench.json files")
    runs.sort(key=lambda r: (r["host"]["fingerprint"], r.get("created", "")))
    hosts = {r["host"]["fingerprint"]: r["host"].get("hostname") for r in runs}
    return {"schema": MERGED_SCHEMA, "created": utc_now(), "hosts": hosts, "runs": runs}
