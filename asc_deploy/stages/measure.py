"""Measuring stages: evaluate a model or artifact on the task, and benchmark the artifacts."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from asc_deploy.records import (
    BatchedRun,
    BenchRun,
    EvalHoldoutRun,
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
    arrival order; and on the eval holdout when the task reserves one, at the served batch only
    (what the decisions read; the batched pass is about the split, and costs as much again).
    Per-example predictions of each go to `<run>/evals/<model>--<variant>/`."""
    from asc_deploy.tasks.holdout import eval_holdout_scoring

    batch = batched_size(s["bench.batch_sizes"])
    holdout = eval_holdout_scoring(task)
    runtime = "PyTorch" if variant in TORCH_VARIANTS else "ONNX Runtime"
    also = ", the eval holdout at batch 1" if holdout is not None else ""
    announce(f"evaluate {model} ({variant}, {runtime}, batch 1 and {batch}{also})")
    if variant in TORCH_VARIANTS:
        run, facts = _torch_runner(source, task, variant)
    else:
        run, facts = _onnx_runner(source)
    served = run(task, SERVED_BATCH, with_cls=True)
    batched = run(task, batch, sort_by_length=False, progress=False)
    folder = ctx.root / "evals" / f"{model}--{variant}"
    saved = _save_predictions(folder, served)
    held = run(holdout, SERVED_BATCH) if holdout is not None else None
    return Evaluation(
        model=model,
        variant=variant,
        metrics=served.metrics,
        primary=served.metrics.get(task.primary_metric),
        seconds=round(served.seconds, 3),
        examples=served.num_examples,
        batch_size=SERVED_BATCH,
        batched=_batched_run(folder, served, batched, batch, task),
        eval_holdout=_eval_holdout_run(folder, held, task) if held is not None else None,
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


def _eval_holdout_run(folder: Path, result, task: Task) -> EvalHoldoutRun:
    """The served-batch run on the eval holdout; its comparisons are filled in by the pipeline
    once the reference's run exists."""
    from asc_deploy.tasks.evaluation import save_predictions

    path = save_predictions(folder / "predictions-eval-holdout.jsonl", result.predictions)
    return EvalHoldoutRun(
        examples=result.num_examples,
        metrics=result.metrics,
        primary=result.metrics.get(task.primary_metric),
        predictions=str(path),
        seconds=round(result.seconds, 3),
    )


def _onnx_runner(source: Path):
    """(run(view, batch_size, **options) -> EvalResult, the artifact's facts)."""
    from asc_deploy.deploy.ort_evaluate import evaluate_onnx
    from asc_deploy.manifest import MODEL_FILE, read_manifest

    def run(view: Task, batch_size: int, with_cls: bool = False, **options):
        # with_cls is PyTorch's: an exported graph has no [CLS] output to collect
        return evaluate_onnx(source, view, batch_size=batch_size, **options)

    facts = {
        "runtime": "onnxruntime",
        "artifact": str(source),
        "sha256": read_manifest(source)["files"][MODEL_FILE]["sha256"],
        "size_bytes": (source / MODEL_FILE).stat().st_size,
    }
    return run, facts


def _torch_runner(source: Path, task: Task, variant: str):
    """(run(view, batch_size, **options) -> EvalResult, the model's facts), the model loaded
    (and for torch-dynamic-int8 quantised) once for every run."""
    from asc_deploy.models.loading import count_parameters, load_model_and_tokenizer
    from asc_deploy.tasks.evaluation import evaluate_torch

    head = task.family  # a task's family names the head its model carries
    model, tokenizer = load_model_and_tokenizer(source, head, label_names=task.label_names or None)
    parameters = count_parameters(model)
    if variant == "torch-dynamic-int8":
        from asc_deploy.measure.torch_runner import quantize_dynamic_int8

        model = quantize_dynamic_int8(model)

    def run(view: Task, batch_size: int, with_cls: bool = False, **options):
        return evaluate_torch(
            model, tokenizer, view, batch_size=batch_size, with_cls=with_cls, **options
        )

    files = list(source.glob("*.safetensors")) + list(source.glob("*.bin"))
    facts = {
        "runtime": "torch",
        "size_bytes": sum(f.stat().st_size for f in files) or None,
        "parameters": parameters if variant == "torch" else None,
    }
    return run, facts


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
