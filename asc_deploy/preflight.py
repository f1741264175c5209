"""Checks that `run` makes before the first stage: what the config names must exist and work here.

The config's own validation (asc_deploy/config.py) already bounds every number and spells every
provider canonically; this adds what only the machine can answer: are the providers installed,
do the model, data and baseline exist, can the output folder be written. Each failure is one
UserError line, raised in seconds instead of after an hour of training.
"""

from __future__ import annotations

import os
from pathlib import Path

from asc_deploy.config import RunConfig
from asc_deploy.errors import UserError


def check_run(cfg: RunConfig) -> None:
    _check_providers(cfg.bench.providers)
    _check_model(cfg.model, "model")
    _check_depths(cfg)
    _check_widths(cfg)
    for spec in cfg.comparisons.off_the_shelf:
        _check_model(spec.model, f"comparisons.off_the_shelf[{spec.name}].model")
    _check_data(cfg)
    if cfg.gates.baseline is not None and not Path(cfg.gates.baseline).is_file():
        raise UserError(
            f"gates.baseline: {cfg.gates.baseline} does not exist; pass a results.json from an "
            "earlier run or remove the key"
        )
    _check_writable(Path(cfg.output_dir))
    if cfg.executor.kind == "ray":  # last: the cluster is asked only once the rest is sound
        from asc_deploy.executors.ray_executor import check_cluster

        check_cluster(cfg)


def _check_providers(providers: list[str]) -> None:
    from asc_deploy.measure.ort_runner import resolve_provider

    for provider in providers:
        try:
            resolve_provider(provider)
        except UserError as exc:
            raise UserError(f"bench.providers: {exc}") from None


def _looks_local(name: str) -> bool:
    """A path (./x, /x, x/y/z, ~) rather than a hub id (org/name)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def _check_model(name: str, key: str) -> None:
    path = Path(name).expanduser()
    if _looks_local(name) and not (path / "config.json").is_file():
        hint = " (run `make models` to stage the offline encoders)" if ".cache" in name else ""
        raise UserError(f"{key}: {name} is not a model folder with config.json{hint}")


def _check_depths(cfg: RunConfig) -> None:
    """Every requested number of removed layers must leave at least one layer."""
    if not Path(cfg.model).expanduser().is_dir():
        return  # a hub id: its depth is known only once it is downloaded
    from asc_deploy.models.loading import load_config

    config = load_config(cfg.model, cfg.trust_remote_code)
    layers = getattr(config, "n_layers", None) or config.num_hidden_layers
    for key, counts in (
        ("asc.remove_layers", cfg.asc.remove_layers),
        ("comparisons.layer_counts", cfg.comparisons.layer_counts),
    ):
        for count in counts:
            if not 1 <= count < layers:
                raise UserError(
                    f"{key}: {count} layers cannot be removed from this {layers}-layer model "
                    f"(keep at least one); use 1..{layers - 1}"
                )


def _check_widths(cfg: RunConfig) -> None:
    """Every width target fits the model's shape and architecture, before any training."""
    if not cfg.apc.targets or not Path(cfg.model).expanduser().is_dir():
        return
    from asc_deploy.compress.apc import resolve_widths
    from asc_deploy.models.loading import load_config

    config = load_config(cfg.model, cfg.trust_remote_code)
    for i, target in enumerate(cfg.apc.targets):
        resolve_widths(config, **target.model_dump(), key=f"apc.targets[{i}]")
    for depth in cfg.apc.depths or []:
        if depth >= config.num_hidden_layers:
            raise UserError(
                f"apc.depths: {depth} removed layers leave nothing of this "
                f"{config.num_hidden_layers}-layer model; use 0..{config.num_hidden_layers - 1}"
            )
    if "width" not in cfg.export.models:
        raise UserError(
            "export.models: apc.targets build width-compressed models but 'width' is not "
            "exported; add it to export.models (or remove apc.targets)"
        )


def _check_data(cfg: RunConfig) -> None:
    """Both splits readable now: a missing file must not wait for the evaluation stage."""
    from asc_deploy.tasks.presets import build_task

    task = build_task(cfg.task)
    for split in ("train", "eval"):
        task.load_examples(split, 1)
    if cfg.task.eval_holdout:
        _check_eval_reserve(cfg, task)


def _check_eval_reserve(cfg: RunConfig, task) -> None:
    """The eval reserve leaves a training set worth compressing, and nothing else reads it.

    What training needs: (1) at least as many examples as the two reserves hold together, so
    that the model the run compresses learns from most of the data it would ship trained on
    (a dev number from a model trained on a third of the data is not the published one); and
    (2) every sample count the config takes from the training split (profiling, calibration,
    greedy scoring, APC importance) that fitted before the eval reserve was cut, so that the
    reserve never silently shrinks what another setting asked for."""
    from asc_deploy.tasks.holdout import eval_reserve_check

    check = eval_reserve_check(task)  # the reserves are cut here: too large ones raise
    trained, screening = len(task.load_examples("train")), len(task.held_out())
    reserved = screening + check.reserved
    if trained < reserved:
        most = max((trained + reserved) // 2 - screening, 0)
        raise UserError(
            f"task.eval_holdout: {check.reserved} reserved for evaluation and {screening} for "
            f"screening leave {trained} training examples, fewer than the reserves; keep the "
            f"reserves to half the training split at most (task.eval_holdout <= {most})"
        )
    for key, count in _training_reads(cfg).items():
        if trained < count <= trained + check.reserved:
            raise UserError(
                f"task.eval_holdout: {check.reserved} reserved leave {trained} training "
                f"examples, fewer than {key} ({count}) reads; lower task.eval_holdout to at "
                f"most {trained + check.reserved - count} or {key}"
            )
    if check.overlap_training or check.overlap_screening:  # never, by construction: a guard
        raise UserError(
            f"task.eval_holdout: {check.overlap_training} of its examples are also in the "
            f"training split and {check.overlap_screening} in the task.holdout reserve"
        )
    if check.examples < 2:
        raise UserError(
            f"task.eval_holdout: {check.examples} of the {check.reserved} reserved examples are "
            "not also in the rest of the training split; a paired comparison needs 2"
        )


def _training_reads(cfg: RunConfig) -> dict[str, int]:
    """Setting -> how many examples it reads from the training split."""
    reads = {}
    if cfg.asc.profile_samples:
        reads["asc.profile_samples"] = cfg.asc.profile_samples
    if {"int8-static", "int8-mixed"} & set(cfg.export.variants):
        reads["export.calibration_samples"] = cfg.export.calibration_samples
    if "greedy" in cfg.comparisons.strategies:
        reads["comparisons.greedy_samples"] = cfg.comparisons.greedy_samples
    if cfg.apc.targets:
        reads["apc.samples"] = cfg.apc.samples
    return reads


def _check_writable(folder: Path) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"output_dir: {probe} is a file, not a folder; choose another output_dir")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"output_dir: {probe} is not writable; choose a folder you can write")
