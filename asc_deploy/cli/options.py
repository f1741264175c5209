"""Options several verbs share: which task, on which data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from asc_deploy.errors import UserError

# `--task`, `--data-dir`, `--config`: how the verbs that read task data are told which.
TaskPreset = Annotated[str | None, typer.Option(help="Task preset, e.g. sst2, mrpc, squad_v2.")]
DataDir = Annotated[Path | None, typer.Option(help="Local data folder for the preset.")]
TaskConfigFile = Annotated[Path | None, typer.Option(help="Run config YAML (its task section).")]


def resolve_task(
    preset: str | None,
    data_dir: Path | None = None,
    config: Path | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
):
    """A Task from `--config run.yaml` (its task section) or `--task PRESET [--data-dir DIR]`."""
    from asc_deploy.config import TaskConfig, load_run_config
    from asc_deploy.tasks.presets import build_task

    if config is not None:
        task_cfg = load_run_config(config).task
    elif preset is not None:
        task_cfg = TaskConfig(preset=preset, data_dir=data_dir)
    else:
        raise UserError("no task given; pass --task PRESET (e.g. sst2) or --config run.yaml")
    updates = {}
    if max_train_samples is not None:
        updates["max_train_samples"] = max_train_samples
    if max_eval_samples is not None:
        updates["max_eval_samples"] = max_eval_samples
    return build_task(task_cfg.model_copy(update=updates))


def parse_layer_list(text: str) -> list[int]:
    try:
        return sorted({int(part) for part in text.replace(" ", "").split(",") if part})
    except ValueError:
        raise UserError(
            f"--layers '{text}' is not a comma-separated list of layer numbers, e.g. 1,3,5"
        ) from None
