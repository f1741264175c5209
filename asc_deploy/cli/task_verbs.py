"""Verbs for tasks: `finetune` (base and recovery fine-tunes) and `evaluate` (PyTorch or ONNX)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from asc_deploy.cli.options import DataDir, TaskConfigFile, TaskPreset, resolve_task
from asc_deploy.errors import UserError


def finetune(
    model: Annotated[str, typer.Argument(help="Model to fine-tune: local folder or hub id.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the fine-tuned model.")
    ],
    task: TaskPreset = None,
    data_dir: DataDir = None,
    config: Annotated[
        Path | None, typer.Option(help="Run config YAML (its task and finetune sections).")
    ] = None,
    recipe: Annotated[
        str | None, typer.Option(help="paper-nli, paper-paraphrase, paper-qa or cpu-fast.")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Step budget (wins over epochs).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs (when no step budget).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    max_train_samples: Annotated[
        int | None, typer.Option(min=1, help="Use the first N examples.")
    ] = None,
    distill_from: Annotated[
        Path | None, typer.Option(help="Teacher (the uncompressed fine-tuned model) for KD.")
    ] = None,
    alpha: Annotated[float | None, typer.Option(help="Weight of the soft-target loss.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Distillation temperature.")] = None,
    evaluate_after: Annotated[
        bool, typer.Option("--eval/--no-eval", help="Evaluate on the eval split afterwards.")
    ] = True,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: torch's).")] = None,
    force: Annotated[bool, typer.Option(help="Train even if a cached run matches.")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the model's own code.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Fine-tune a model on a task (cached: the same inputs twice is a no-op)."""
    from asc_deploy.compress.finetune import finetune as run_finetune
    from asc_deploy.compress.finetune import resolve_recipe
    from asc_deploy.config import FinetuneConfig, load_run_config
    from asc_deploy.fsutil import read_json

    base = load_run_config(config).finetune if config else FinetuneConfig(preset="cpu-fast")
    overrides = {
        "preset": recipe,
        "max_steps": steps,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "seed": seed,
        "distill_alpha": alpha,
        "distill_temperature": temperature,
    }
    recipe_cfg = base.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if distill_from is not None:
        recipe_cfg = recipe_cfg.model_copy(update={"distillation": True})
    resolve_recipe(recipe_cfg)  # bad recipe values fail before any data is read
    the_task = resolve_task(task, data_dir, config, max_train_samples=max_train_samples)
    _check_model(model)
    if distill_from is not None:
        _check_model(str(distill_from))
    _set_threads(threads)
    record_path = output / "finetune.json"
    before = record_path.stat().st_mtime_ns if record_path.is_file() else None
    out = run_finetune(
        model,
        the_task,
        recipe_cfg,
        output,
        teacher=distill_from,
        force=force,
        progress=not as_json,
        trust_remote_code=trust_remote_code,
    )
    record = read_json(out / "finetune.json")
    result = {
        "output": str(out),
        "cached": before is not None and record_path.stat().st_mtime_ns == before,
        "finetune": {k: v for k, v in record.items() if k != "loss_curve"},
    }
    if evaluate_after:
        result["evaluation"] = _evaluate_torch(out, the_task, None, 64, None, not as_json)
    _print(result, as_json, title=f"fine-tuned {the_task.name} -> {out}")


def evaluate(
    model: Annotated[
        Path, typer.Argument(help="PyTorch model folder, or ONNX artifact folder (model.onnx).")
    ],
    task: TaskPreset = None,
    data_dir: DataDir = None,
    config: TaskConfigFile = None,
    max_samples: Annotated[
        int | None, typer.Option(min=1, help="Evaluate the first N examples.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per forward pass.")] = 64,
    predictions: Annotated[
        Path | None, typer.Option(help="Write per-example predictions (JSONL + .cls.npy) here.")
    ] = None,
    provider: Annotated[str, typer.Option(help="ONNX Runtime provider (ONNX artifacts).")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="Threads (torch or ORT intra-op).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Metrics of a model on a task's eval split (PyTorch, or ONNX Runtime for an artifact)."""
    if not model.is_dir():
        raise UserError(f"model folder not found: {model}; pass a model or ONNX artifact folder")
    if predictions is not None and predictions.suffix != ".jsonl":
        raise UserError(f"--predictions {predictions}: use a .jsonl file name")
    the_task = resolve_task(task, data_dir, config, max_eval_samples=max_samples)
    if (model / "model.onnx").is_file():
        result = _evaluate_onnx(
            model, the_task, max_samples, provider, threads, predictions, as_json
        )
    else:
        _check_model(str(model))
        _set_threads(threads)
        result = _evaluate_torch(model, the_task, max_samples, batch_size, predictions, not as_json)
    _print({"model": str(model), "evaluation": result}, as_json, title=f"{the_task.name}: {model}")


def _evaluate_torch(model_dir, task, max_samples, batch_size, predictions, progress) -> dict:
    from asc_deploy.models.loading import load_model_and_tokenizer
    from asc_deploy.tasks.evaluation import evaluate_torch, save_predictions

    head = "classification" if task.family == "classification" else "question-answering"
    model, tokenizer = load_model_and_tokenizer(str(model_dir), head)
    if head == "classification" and model.config.num_labels != len(task.label_names):
        raise UserError(
            f"{model_dir} has {model.config.num_labels} labels but task {task.name} has "
            f"{len(task.label_names)}; evaluate it on the task it was fine-tuned for"
        )
    result = evaluate_torch(model, tokenizer, task, max_samples, batch_size, progress=progress)
    if predictions is not None:
        save_predictions(predictions, result.predictions, result.cls_vectors)
    return _summary(task, result, "torch", predictions)


def _evaluate_onnx(artifact, task, max_samples, provider, threads, predictions, as_json) -> dict:
    from asc_deploy.deploy.ort_evaluate import evaluate_onnx
    from asc_deploy.tasks.evaluation import save_predictions

    result = evaluate_onnx(
        artifact, task, max_samples, provider, intra_op_threads=threads, progress=not as_json
    )
    if predictions is not None:
        save_predictions(predictions, result.predictions, result.cls_vectors)
    return _summary(task, result, f"onnxruntime/{provider}", predictions)


def _summary(task, result, runtime: str, predictions: Path | None) -> dict:
    return {
        "task": task.name,
        "family": task.family,
        "primary_metric": task.primary_metric,
        "data_note": task.data_note,
        "runtime": runtime,
        "examples": len(result.predictions),
        "seconds": round(result.seconds, 3),
        "metrics": result.metrics,
        "predictions": str(predictions) if predictions else None,
    }


def _check_model(source: str) -> None:
    from asc_deploy.models.loading import load_config

    load_config(source)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be >= 1 (got {threads})")
        import torch

        torch.set_num_threads(threads)


def _print(result: dict, as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if "finetune" in result:
        ft = result["finetune"]
        rate = ft.get("examples_per_s") or 0
        if result.get("cached"):
            console.print(f"cached: {result['output']} already holds this run (use --force)")
        console.print(
            f"{ft['steps']} steps, {ft['seconds']:.1f} s, {rate:.1f} examples/s, "
            f"final loss {ft['final_loss']:.4f} (recipe {ft['recipe']['preset']})"
        )
    evaluation = result.get("evaluation")
    if evaluation:
        table = Table(title=title)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in evaluation["metrics"].items():
            star = " *" if name == evaluation["primary_metric"] else ""
            table.add_row(name + star, f"{value:.2f}")
        console.print(table)
        console.print(
            f"{evaluation['examples']} examples in {evaluation['seconds']:.1f} s "
            f"({evaluation['runtime']})"
            + (f"; predictions: {evaluation['predictions']}" if evaluation["predictions"] else "")
        )
        if evaluation["data_note"]:
            console.print(f"data: {evaluation['data_note']}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
    app.command("evaluate")(evaluate)
