"""The export stage: an fp32 ONNX artifact validated against PyTorch, then each variant.

`asc-deploy export` / `quantize` / `optimize` and `run` all go through `export_features` and
`build_variant`, so one action has one behaviour and a variant name maps to its builder in one
place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asc_deploy.config import ExportConfig
from asc_deploy.errors import UserError
from asc_deploy.records import ArtifactSet, ModelFolder
from asc_deploy.stages.core import Context, Settings, announce, stage
from asc_deploy.tasks.base import Feature, Task

# How each variant is derived from the fp32 artifact (the quantize verb's --mode names).
MODE_OF_VARIANT = {"int8-dynamic": "dynamic", "int8-static": "static", "fp16": "fp16"}
GPU_ONLY_VARIANTS = {"fp16": "a CUDA variant"}


def export_features(
    task: Task, tokenizer, settings: ExportConfig
) -> tuple[list[Feature], list[Feature]]:
    """(validation, sample) features from the evaluation split.

    Validation runs on a spread of lengths (every k-th example, not just the first few); the
    saved sample inputs are the first `sample_inputs` examples, for benchmarks with real lengths.
    """
    examples = task.load_examples("eval")
    step = max(1, len(examples) // settings.validation_samples)
    validation = task.encode(tokenizer, examples[::step][: settings.validation_samples])
    samples = task.encode(tokenizer, examples[: settings.sample_inputs])
    return validation, samples


def calibration_features(task: Task, tokenizer, settings: ExportConfig) -> list[Feature]:
    """Static quantisation calibrates on the *training* split, never on the evaluation split."""
    return task.encode(tokenizer, task.load_examples("train", settings.calibration_samples))


def build_variant(
    variant: str,
    fp32_dir: Path,
    dest: Path,
    settings: ExportConfig,
    task: Task | None = None,
    tokenizer=None,
    provider: str | None = None,
    reuse: bool = True,
) -> dict[str, Any]:
    """Derive `variant` from the fp32 artifact at `fp32_dir`; returns the variant's manifest.

    int8-static and int8-mixed read the task's training split (through `tokenizer`); `provider`
    validates fp16 (default: cuda)."""
    from asc_deploy.deploy.optimize import optimize_artifact
    from asc_deploy.deploy.quantize import quantize_artifact

    if variant == "optimized":
        return optimize_artifact(fp32_dir, dest, "cpu", reuse=reuse)
    data = task_data(fp32_dir, task) if variant in ("int8-static", "int8-mixed") else None
    if variant == "int8-mixed":
        from asc_deploy.deploy.mixed_precision import quantize_mixed_artifact, training_slices

        calibration, heldout = training_slices(
            task, tokenizer, settings.calibration_samples, settings.mixed_samples
        )
        return quantize_mixed_artifact(
            fp32_dir, dest, calibration, heldout, settings.int8_budget, base=settings.mixed_mode,
            isa=settings.isa, per_channel=settings.per_channel,
            calibration_samples=settings.calibration_samples,
            calibrator=settings.calibration_method, reuse=reuse, data=data,
        )  # fmt: skip
    mode = MODE_OF_VARIANT[variant]
    calibration = calibration_features(task, tokenizer, settings) if mode == "static" else None
    return quantize_artifact(
        fp32_dir,
        dest,
        mode,
        isa=settings.isa,
        calibration_features=calibration,
        calibration_samples=settings.calibration_samples,
        calibrator=settings.calibration_method,
        provider=provider or ("cuda" if mode == "fp16" else None),
        reuse=reuse,
        per_channel=settings.per_channel,
        data=data,
    )


def task_data(fp32_dir: Path, task: Task | None) -> dict[str, str]:
    """The task and training-data hash a calibrated variant reads (recorded in its manifest),
    refused when the artifact was exported for another task: an SST-2 model calibrated or
    searched on MRPC pairs exits 0 with a meaningless artifact otherwise."""
    from asc_deploy.deploy.ort_evaluate import check_artifact_task
    from asc_deploy.fsutil import hash_json
    from asc_deploy.manifest import read_manifest

    if task is None:
        raise UserError("static and mixed int8 read the task's training data; name the task")
    manifest = read_manifest(fp32_dir)
    exported_for = (manifest.get("task") or {}).get("name")
    if exported_for and exported_for != task.name:
        raise UserError(
            f"artifact {fp32_dir} was exported for task {exported_for}, not {task.name}; "
            f"quantise it with --task {exported_for} (its own training data)"
        )
    check_artifact_task(manifest, fp32_dir, task)  # family and label count
    return {"task": task.name, "train_hash": hash_json(task.data_identity("train"))}


def export_model(
    model_dir: Path,
    dest: Path,
    task: Task,
    settings: ExportConfig,
    name: str | None = None,
    reuse: bool = True,
) -> dict[str, Any]:
    """The validated fp32 artifact of `model_dir` at `dest` (the `export` verb and stage)."""
    from asc_deploy.deploy.export import export_artifact
    from asc_deploy.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    validation, samples = export_features(task, tokenizer, settings)
    return export_artifact(
        model_dir,
        dest,
        task.family,
        validation,
        samples,
        settings.opset,
        name=name,
        task_name=task.name,
        reuse=reuse,
    )


@stage("export", reads=("task", "export", "bench.providers"), record=ArtifactSet)
def export(
    s: Settings, ctx: Context, model: ModelFolder, task: Task, name: str, variants: list[str]
) -> ArtifactSet:
    """`variants` of one model under `<run>/artifacts/<name>/`; GPU-only ones need a GPU bench."""
    settings: ExportConfig = s["export"]
    folder = ctx.root / "artifacts" / name
    reuse = "export" not in ctx.force
    announce(f"export {name}")
    export_model(Path(model.path), folder / "fp32", task, settings, name=name, reuse=reuse)
    built, skipped = {"fp32": str(folder / "fp32")}, {}
    tokenizer = None
    for variant in variants:
        if variant == "fp32":
            continue
        if variant in GPU_ONLY_VARIANTS and not set(s["bench.providers"]) - {"cpu"}:
            skipped[variant] = f"{GPU_ONLY_VARIANTS[variant]}; no GPU provider in bench.providers"
            continue
        if tokenizer is None:
            from asc_deploy.models.loading import load_tokenizer

            tokenizer = load_tokenizer(model.path)
        fp32 = folder / "fp32"
        try:
            build_variant(variant, fp32, folder / variant, settings, task, tokenizer, reuse=reuse)
        except UserError as exc:
            if variant != "int8-mixed":
                raise
            skipped[variant] = str(exc)  # no mix within the budget: say so, keep the others
            continue
        built[variant] = str(folder / variant)
    return ArtifactSet(model=name, artifacts=built, skipped=skipped)
