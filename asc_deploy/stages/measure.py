"""Measuring stages: evaluate a model or artifact on the task, and benchmark the artifacts."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from asc_deploy.records import (
    BatchedRun,
    BenchRun,
    Evaluation,
    ModelFolder,
    SpeedTrial,
    TrialRound,
)
from asc_deploy.stages.core import Context, Settings, announce, stage
from asc_deploy.tasks.base import Task

TORCH_VARIANTS = ("torch", "torch-dynamic-int8")


SERVED_BATCH = 1  # how SingleStream serves a request: the accuracy gates and picks rest on


def batched_size(bench_batches: list[int]) -> int:
    """The largest batch a server of this run forms: the bench's, or Triton's dynamic batcher's."""
    from asc_deploy.deploy.triton import DEFAULT_MAX_BATCH_SIZE

    return max([*bench_batches, DEFAULT_MAX_BATCH_SIZE])


@stage("evaluate", reads=("task", "bench.batch_sizes"), record=Evaluation)
def evaluate(
    s: Settings, ctx: Context, source: Path, task: Task, model: str, variant: str
) -> Evaluation:
    """`source` (a model folder for PyTorch variants, an artifact folder otherwise) on the
    evaluation split, at the served batch (1) and at the largest batch a server forms, in
    arrival order; per-example predictions of both go to `<run>/evals/<model>--<variant>/`."""
    batch = batched_size(s["bench.batch_sizes"])
    if variant in TORCH_VARIANTS:
        announce(f"evaluate {model} ({variant}, PyTorch, batch 1 and {batch})")
        served, batched, facts = _evaluate_torch(source, task, variant, batch)
    else:
        announce(f"evaluate {model} ({variant}, ONNX Runtime, batch 1 and {batch})")
        served, batched, facts = _evaluate_onnx(source, task, batch)
    folder = ctx.root / "evals" / f"{model}--{variant}"
    saved = _save_predictions(folder, served)
    return Evaluation(
        model=model,
        variant=variant,
        metrics=served.metrics,
        primary=served.metrics.get(task.primary_metric),
        seconds=round(served.seconds, 3),
        examples=served.num_examples,
        batch_size=SERVED_BATCH,
        batched=_batched_run(folder, served, batched, batch, task),
        **saved,
        **facts,
    )


def _batched_run(folder: Path, served, batched, batch: int, task: Task) -> BatchedRun:
    from asc_deploy.tasks.evaluation import prediction_flips, save_predictions

    path = save_predictions(folder / f"predictions-b{batch}.jsonl", batched.predictions)
    return BatchedRun(
        batch_size=batch,
        metrics=batched.metrics,
        primary=batched.metrics.get(task.primary_metric),
        predictions=str(path),
        flips=prediction_flips(served.predictions, batched.predictions),
    )


def _evaluate_onnx(source: Path, task: Task, batch: int):
    from asc_deploy.deploy.ort_evaluate import evaluate_onnx

    served = evaluate_onnx(source, task, batch_size=SERVED_BATCH)
    batched = evaluate_onnx(source, task, batch_size=batch, sort_by_length=False, progress=False)
    from asc_deploy.deploy.artifacts import MODEL_FILE, read_manifest

    facts = {
        "runtime": "onnxruntime",
        "artifact": str(source),
        "sha256": read_manifest(source)["files"][MODEL_FILE]["sha256"],
        "size_bytes": (source / MODEL_FILE).stat().st_size,
    }
    return served, batched, facts


def _evaluate_torch(source: Path, task: Task, variant: str, batch: int):
    from asc_deploy.models.loading import count_parameters, load_model_and_tokenizer
    from asc_deploy.tasks.evaluation import evaluate_torch

    head = task.family  # a task's family names the head its model carries
    model, tokenizer = load_model_and_tokenizer(source, head, label_names=task.label_names or None)
    parameters = count_parameters(model)
    if variant == "torch-dynamic-int8":
        from asc_deploy.measure.torch_runner import quantize_dynamic_int8

        model = quantize_dynamic_int8(model)
    served = evaluate_torch(model, tokenizer, task, batch_size=SERVED_BATCH)
    batched = evaluate_torch(
        model, tokenizer, task, batch_size=batch, with_cls=False, progress=False,
        sort_by_length=False,
    )  # fmt: skip
    files = list(source.glob("*.safetensors")) + list(source.glob("*.bin"))
    facts = {
        "runtime": "torch",
        "size_bytes": sum(f.stat().st_size for f in files) or None,
        "parameters": parameters if variant == "torch" else None,
    }
    return served, batched, facts


def _save_predictions(folder: Path, result) -> dict[str, str | None]:
    import numpy as np

    from asc_deploy.tasks.evaluation import save_predictions

    folder.mkdir(parents=True, exist_ok=True)
    save_predictions(folder / "predictions.jsonl", result.predictions)
    cls = None
    if result.cls_vectors is not None:
        cls = folder / "cls.npy"
        np.save(cls, result.cls_vectors)
    return {"predictions": str(folder / "predictions.jsonl"), "cls": str(cls) if cls else None}


@stage("bench", reads=("bench",), record=BenchRun)
def bench(
    s: Settings,
    ctx: Context,
    artifacts: list[Path],
    reference: ModelFolder,
    reference_name: str,
    host: str,
) -> BenchRun:
    """Every artifact folder (and the reference in PyTorch) on this host; `host` keys the
    record, and each artifact's manifest (its files' hashes) does too."""
    from asc_deploy.fsutil import write_json_atomic
    from asc_deploy.measure.harness import BenchSettings, resolve_targets, run_bench, torch_targets
    from asc_deploy.progress import status_line

    settings = BenchSettings.from_config(s["bench"]).validated()
    announce(f"bench {len(artifacts)} artifacts")
    targets = resolve_targets([str(p) for p in artifacts])
    if s["bench"].include_torch:
        for target in torch_targets(reference.path):
            target.model = reference_name  # the folder may be named anything
            targets.append(target)
    doc = run_bench(targets, settings, progress=status_line)
    scenarios = s["bench"].scenarios
    if scenarios.run:  # serving scenarios on the same targets, each LoadGen run in a fresh process
        from asc_deploy.measure.scenarios import run_scenarios, scenario_flags

        records = run_scenarios(targets, settings, scenarios, progress=status_line)
        doc.update(scenarios=records, scenario_settings=scenarios.record())
        doc["flags"] += scenario_flags(records)
    run = BenchRun.model_validate(doc)
    write_json_atomic(ctx.root / "bench.json", run.dump())
    return run


@stage(
    "speed-trial", reads=("bench", "gates.max_extra_rounds", "gates.load_limit"), record=SpeedTrial
)
def speed_trial(
    s: Settings,
    ctx: Context,
    candidate: Path,
    model: str,
    variant: str,
    reference: ModelFolder,
    reference_name: str,
    provider: str,
    shape: tuple[int, int],
    limit: float,
    host: str,
    quiet_bare_ms: float | None = None,
    sample_inputs: Path | None = None,
) -> SpeedTrial:
    """The speed gate's pair (`candidate`: an artifact folder, or the reference folder for a
    PyTorch variant, against the reference in PyTorch fp32) timed back to back until the
    paired bounds settle `limit` or the extra rounds run out (measure/speed_trial.py);
    `quiet_bare_ms`, the bench's bare-loop p50, tells the rounds the host was loaded in."""
    from asc_deploy.measure.harness import BenchSettings, Cell, onnx_target, run_worker, worker_spec
    from asc_deploy.measure.latency import summarize_ms
    from asc_deploy.measure.noise import bare_spec
    from asc_deploy.measure.speed_trial import TEST, bare_bound, run_trial
    from asc_deploy.progress import status_line

    settings = BenchSettings.from_config(s["bench"]).validated()
    batch, sequence = shape
    if variant in TORCH_VARIANTS:  # PyTorch variants are timed on CPU only, as in the bench
        target, provider = _torch_target(candidate, variant), "cpu"
    else:
        target = onnx_target(candidate)
    cells = {
        "candidate": Cell(target, provider, batch, sequence),
        "baseline": Cell(_torch_target(reference.path, "torch"), "cpu", batch, sequence),
    }
    inputs = target.sample_inputs or sample_inputs

    def measure(side: str) -> float:
        spec = bare_spec(settings) if side == "bare" else worker_spec(cells[side], settings, inputs)
        return summarize_ms(run_worker(spec, settings.worker_timeout_s)["samples_s"])["p50"]

    announce(f"speed trial: {model} {variant} vs {reference_name} torch, {batch}x{sequence}")
    extra = s["gates.max_extra_rounds"]
    load_limit = s["gates.load_limit"]
    bound = bare_bound(quiet_bare_ms, load_limit)
    trial = run_trial(measure, limit, extra, bound, progress=status_line)
    return SpeedTrial(
        host=host,
        provider=provider,
        batch=batch,
        sequence=sequence,
        model=model,
        variant=variant,
        baseline=reference_name,
        limit=limit,
        rounds=[TrialRound(**{k: _ms(v) for k, v in asdict(r).items()}) for r in trial.rounds],
        quiet_bare_ms=quiet_bare_ms,
        load_limit=load_limit,
        looks=trial.looks,
        test=TEST,
    )


def _torch_target(folder: Path | str, variant: str):
    from asc_deploy.measure.harness import torch_targets

    return next(t for t in torch_targets(folder) if t.variant == variant)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
