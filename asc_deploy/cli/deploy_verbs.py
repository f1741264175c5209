"""Deploy verbs: export, optimize, quantize, triton. Thin: parse, call asc_deploy.deploy, print.

Heavy libraries are imported inside the verbs (see asc_deploy/cli/__init__.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from asc_deploy.errors import UserError

console = Console()
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"

TaskOpt = Annotated[
    str | None, typer.Option("--task", help="task preset (sst2, mrpc, rte, mnli, squad_v2, ...)")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="run config YAML (its task and export sections)")
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="folder with the task's files (default ../shared/data)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the manifest / result as JSON")]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="replace an -o folder that is not a previous output"),
]


def _build_task(task: str | None, config: Path | None, data_dir: Path | None):
    """A Task from --config (its task section) or a --task preset with local data."""
    from asc_deploy.config import TaskConfig, load_run_config
    from asc_deploy.tasks.presets import build_task

    if config is not None:
        return build_task(load_run_config(config).task, Path.cwd())
    if task is None:
        raise UserError("name the task: --task <preset> or --config <run.yaml>")
    folder = data_dir or (DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None)
    return build_task(TaskConfig(preset=task, data_dir=folder), Path.cwd())


def _export_settings(config: Path | None):
    from asc_deploy.config import ExportConfig, load_run_config

    return load_run_config(config).export if config is not None else ExportConfig()


def _artifact_dir(path: Path) -> Path:
    """An artifact folder; a bare .onnx file gets a one-line reason why it is not one."""
    if path.is_file():
        import onnx

        try:
            onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf raises several types for a corrupt file
            raise UserError(
                f"ONNX file {path} failed to load ({type(exc).__name__}); re-export it"
            ) from exc
        raise UserError(
            f"{path} is a bare ONNX file; pass its artifact folder (made by `asc-deploy export`)"
        )
    if not path.is_dir():
        raise UserError(f"artifact folder not found: {path}")
    return path


def _check_artifact_output(
    dest: Path, variant: str, overwrite: bool, inputs: list[Path], verb: str
) -> None:
    """Refuse an -o that would lose data: not empty and not an artifact of this variant."""
    from asc_deploy.fsutil import check_output_folder, has_marker

    check_output_folder(
        dest,
        lambda folder: has_marker(folder, "manifest.json", variant=variant),
        f"`asc-deploy {verb}` ({variant})",
        overwrite,
        inputs,
    )


def _report(manifest: dict, as_json: bool, what: str) -> None:
    if as_json:
        print(json.dumps(manifest, indent=2, default=str))
        return
    v = manifest.get("validation") or {}
    reused = " (reused: inputs unchanged)" if manifest.get("reused") else ""
    console.print(
        f"[bold]{what}[/bold] {manifest['variant']}{reused}: "
        f"{manifest['size_bytes'] / 1e6:.2f} MB, "
        f"max |logit diff| {v.get('max_abs_diff', float('nan')):.2e} vs {v.get('against')}, "
        f"prediction agreement {100 * v.get('prediction_agreement', 0):.1f}% "
        f"on {v.get('examples')} inputs"
    )
    fusion = manifest.get("transform") or {}
    if "fused_attention" in fusion:
        console.print(
            f"fused attention nodes: {fusion['fused_attention']} "
            f"of {fusion['encoder_layers']} layers"
        )


def export(
    model_dir: Annotated[Path, typer.Argument(help="fine-tuned (or pruned) model folder")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="artifact folder (default exports/<run>/<model>/fp32)"),
    ] = None,
    task: TaskOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    run: Annotated[
        str, typer.Option("--run", help="run name for the default output folder")
    ] = "run",
    name: Annotated[
        str | None, typer.Option("--name", help="model name (default: the folder's name)")
    ] = None,
    validate_samples: Annotated[
        int | None, typer.Option("--validate-samples", help="eval examples to validate on")
    ] = None,
    sample_inputs: Annotated[
        int | None, typer.Option("--sample-inputs", help="real inputs saved for benchmarking")
    ] = None,
    opset: Annotated[int | None, typer.Option("--opset")] = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a model folder to a validated fp32 ONNX artifact (the same path `run` takes)."""
    from asc_deploy.deploy.export import check_opset, model_summary
    from asc_deploy.stages.deploy import export_model

    settings = _export_settings(config)
    overrides = {
        "validation_samples": validate_samples,
        "sample_inputs": sample_inputs,
        "opset": opset,
    }
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if settings.validation_samples < 2 or settings.sample_inputs < 1:
        raise UserError("--validate-samples must be at least 2 and --sample-inputs at least 1")
    name = name or model_dir.name
    dest = output or Path("exports") / run / name / "fp32"
    _check_artifact_output(dest, "fp32", overwrite, [model_dir], "export")
    check_opset(settings.opset)
    model_summary(model_dir)  # not a model folder: one line, before any data is read
    the_task = _build_task(task, config, data_dir)
    n_validate = settings.validation_samples
    with console.status(f"exporting {model_dir} and validating on {n_validate} examples"):
        manifest = export_model(model_dir, dest, the_task, settings, name=name)
    _report(manifest, as_json, f"exported {dest}")


def optimize(
    artifact: Annotated[Path, typer.Argument(help="fp32 artifact folder")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="default: sibling folder 'optimized'")
    ] = None,
    target: Annotated[str, typer.Option("--target", help="cpu or cuda")] = "cpu",
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """ORT transformer optimisation, with a count of fused attention nodes."""
    from asc_deploy.deploy.optimize import optimize_artifact

    if target not in ("cpu", "cuda"):
        raise UserError(f"--target must be cpu or cuda, got {target}")
    artifact = _artifact_dir(artifact)
    dest = output or artifact.parent / ("optimized" if target == "cpu" else "optimized-cuda")
    _check_artifact_output(dest, "optimized", overwrite, [artifact], "optimize")
    manifest = optimize_artifact(artifact, dest, target)  # type: ignore[arg-type]
    _report(manifest, as_json, f"optimized {dest}")


def quantize(
    artifact: Annotated[Path, typer.Argument(help="artifact folder (fp32 for static)")],
    mode: Annotated[
        str, typer.Option("--mode", help="dynamic, static, mixed (int8-mixed) or fp16")
    ] = "dynamic",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="default: sibling int8-dynamic / int8-static / fp16"),
    ] = None,
    isa: Annotated[
        str | None, typer.Option("--isa", help="auto, avx2, avx512, avx512_vnni, arm64")
    ] = None,
    calibration_samples: Annotated[int | None, typer.Option("--calibration-samples")] = None,
    calibrator: Annotated[
        str | None, typer.Option("--calibrator", help="minmax, entropy, percentile")
    ] = None,
    provider: Annotated[
        str | None, typer.Option("--provider", help="provider that validates fp16 (cuda/cpu)")
    ] = None,
    per_channel: Annotated[
        bool | None, typer.Option("--per-channel/--per-tensor", help="int8 weight scales")
    ] = None,
    budget: Annotated[
        float | None, typer.Option("--budget", help="mixed: metric points allowed below fp32")
    ] = None,
    mixed_samples: Annotated[
        int | None, typer.Option("--mixed-samples", help="mixed: held-out training examples")
    ] = None,
    mixed_base: Annotated[
        str | None, typer.Option("--mixed-base", help="mixed: dynamic or static int8")
    ] = None,
    task: TaskOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """int8 dynamic (ISA preset), int8 static QDQ (calibrated on task training data), int8-mixed
    (the layers whose int8 costs accuracy on held-out training data stay fp32) or fp16."""
    from asc_deploy.deploy.mixed_precision import check_mixed_request
    from asc_deploy.deploy.quantize import check_calibrator, resolve_isa

    settings = _export_settings(config)
    variants = {"dynamic": "int8-dynamic", "static": "int8-static", "mixed": "int8-mixed"}
    if mode not in (*variants, "fp16"):
        raise UserError(f"--mode must be dynamic, static, mixed or fp16, got {mode}")
    budget = budget if budget is not None else settings.int8_budget
    mixed_base = mixed_base or settings.mixed_mode
    calibrator = calibrator or settings.calibration_method
    if mode == "mixed":
        check_mixed_request(budget, mixed_base, calibrator)
    elif mode == "static":
        check_calibrator(calibrator)
    artifact = _artifact_dir(artifact)
    variant = variants.get(mode, "fp16")
    dest = output or artifact.parent / variant
    _check_artifact_output(dest, variant, overwrite, [artifact], "quantize")
    from asc_deploy.deploy.artifacts import require_float32_parent
    from asc_deploy.manifest import read_manifest

    require_float32_parent(read_manifest(artifact), artifact, f"quantize --mode {mode}")
    if provider is not None:
        from asc_deploy.measure.ort_runner import resolve_provider

        resolve_provider(provider)
    resolve_isa(isa or settings.isa)  # an unknown ISA fails before any data is read
    if calibration_samples is not None and calibration_samples < 1:
        raise UserError("the calibration set is empty (--calibration-samples < 1); use e.g. 128")
    overrides = {
        "isa": isa,
        "calibration_samples": calibration_samples,
        "calibration_method": calibrator,
        "per_channel": per_channel,
        "int8_budget": budget,
        "mixed_samples": mixed_samples,
        "mixed_mode": mixed_base,
    }
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    the_task = tokenizer = None
    if variant in ("int8-static", "int8-mixed"):  # calibrated on the task's training split
        from asc_deploy.models.loading import load_tokenizer

        the_task = _build_task(task, config, data_dir)
        tokenizer = load_tokenizer(artifact)
    from asc_deploy.stages.deploy import build_variant

    with console.status(f"{variant}: quantising {artifact}"):
        manifest = build_variant(
            variant, artifact, dest, settings, the_task, tokenizer, provider=provider
        )
    _report(manifest, as_json, f"quantized {dest}")


def triton(
    artifacts: Annotated[
        list[str], typer.Argument(help="artifact folders, optionally NAME=FOLDER")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="model repository folder")] = Path(
        "model_repository"
    ),
    max_batch_size: Annotated[int, typer.Option("--max-batch-size")] = 64,
    kind: Annotated[str, typer.Option("--kind", help="cpu or gpu instances")] = "cpu",
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="add models to an -o folder that is not a repository"),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add artifact folders to a Triton model repository (onnxruntime backend)."""
    from asc_deploy.deploy.triton import is_triton_repository, write_triton_repository
    from asc_deploy.fsutil import check_output_folder
    from asc_deploy.manifest import read_manifest

    if kind not in ("cpu", "gpu"):
        raise UserError(f"--kind must be cpu or gpu, got {kind}")
    models: dict[str, Path] = {}
    for item in artifacts:
        name, _, folder = item.rpartition("=") if "=" in item else ("", "", item)
        path = _artifact_dir(Path(folder))
        if not name:
            m = read_manifest(path)
            name = f"{m.get('name')}-{m.get('variant')}"
        if name in models:
            raise UserError(
                f"two artifacts would be named '{name}' in the repository; use NAME=FOLDER"
            )
        models[name] = path
    check_output_folder(
        output, is_triton_repository, "Triton repository", overwrite, list(models.values())
    )
    result = write_triton_repository(models, output, max_batch_size, f"KIND_{kind.upper()}")
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for name, info in result["models"].items():
        console.print(f"{output}/{name}: {info['variant']} from {info['artifact']}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("optimize")(optimize)
    app.command("quantize")(quantize)
    app.command("triton")(triton)
