"""Turn a layer selection into a smaller model folder that reloads with plain from_pretrained."""

from __future__ import annotations

import shutil
from pathlib import Path

from asc_deploy.compress.apc import WIDTH_PROJECTION, WIDTH_RECORD
from asc_deploy.errors import UserError
from asc_deploy.fsutil import atomic_dir, hash_folder, hash_json, write_json_atomic
from asc_deploy.models.adapters import adapter_for
from asc_deploy.models.loading import Head, count_parameters, load_config, load_model_and_tokenizer
from asc_deploy.models.surgery import remove_layers

PRUNING_RECORD = "pruning.json"


def infer_head(source: str | Path) -> Head:
    """The head a saved model was trained with, from its config's architectures."""
    config = load_config(source)
    names = " ".join(getattr(config, "architectures", None) or [])
    if "QuestionAnswering" in names:
        return "question-answering"
    if "SequenceClassification" in names:
        return "classification"
    return "encoder"


def check_profiled_model(record: dict, model: str | Path, similarity: str | Path) -> None:
    """UserError when a similarity record was profiled on a different model than `model`.

    Compared by the folder hash `profile` stores; records without one (hub ids) pass.
    """
    stored = (record.get("identity") or {}).get("model_hash")
    if stored is None or not Path(model).is_dir():
        return
    actual = hash_folder(model)
    if actual != stored:
        raise UserError(
            f"{similarity} was profiled on a different model than {model} (model hash "
            f"{stored[:12]} vs {actual[:12]}); run `asc-deploy profile` on this model"
        )


def matrix_hash(matrix) -> str:
    return hash_json([[round(float(v), 8) for v in row] for row in matrix])


def prune_model(
    source: str | Path,
    removed_layers: list[int],
    output_dir: str | Path,
    strategy: str,
    threshold: float | None = None,
    seed: int | None = None,
    similarity_hash: str | None = None,
    head: Head | None = None,
) -> dict:
    """Remove 1-based `removed_layers` from `source`, save to `output_dir`; returns the record."""
    head = head or infer_head(source)
    model, tokenizer = load_model_and_tokenizer(source, head=head)
    adapter = adapter_for(model.config.model_type)
    total = adapter.num_layers(model)
    params_before = count_parameters(model)
    remove_layers(model, [k - 1 for k in removed_layers])
    record = {
        "source": str(source),
        "strategy": strategy,
        "threshold": threshold,
        "seed": seed,
        "similarity_hash": similarity_hash,
        "original_layers": total,
        "removed_layers": sorted(removed_layers),
        "kept_layers": [k for k in range(1, total + 1) if k not in set(removed_layers)],
        "parameters_before": params_before,
        "parameters_after": count_parameters(model),
        "layer_numbering": "1-based; layer k produced hidden state k of the original model",
    }
    # Pruning an already pruned model keeps the history, so a report can name original layers.
    previous = Path(source) / PRUNING_RECORD
    if previous.is_file():
        from asc_deploy.fsutil import read_json

        record["previous"] = read_json(previous)
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / PRUNING_RECORD, record)
        for name in (WIDTH_RECORD, WIDTH_PROJECTION):  # a narrowed model stays distillable
            if (Path(source) / name).is_file():
                shutil.copy2(Path(source) / name, tmp / name)
    return record
