"""`asc-deploy profile`: the similarity matrix of a model on its task's training data, on disk."""

from __future__ import annotations

import platform
from pathlib import Path

from asc_deploy.compress.asc import SimilarityProfile, profile_similarity
from asc_deploy.compress.pruning import matrix_hash
from asc_deploy.fsutil import atomic_dir, hash_folder, read_json, write_json_atomic
from asc_deploy.tasks.base import Task, collate

SIMILARITY_FILE = "similarity.json"
HEATMAP_FILE = "similarity.png"


def length_sorted_batches(features: list[dict], batch_size: int, pad_token_id: int):
    """Batches of similar-length rows: less padding to compute (the matrix ignores padding)."""
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        yield collate([features[i] for i in order[start : start + batch_size]], pad_token_id)


def profile_task(
    model_source: str | Path,
    task: Task,
    max_samples: int | None = None,
    batch_size: int = 32,
    trust_remote_code: bool = False,
) -> tuple[SimilarityProfile, dict]:
    """Profile `model_source` on the task's training split; returns the profile and its identity."""
    from asc_deploy.models.loading import load_model_and_tokenizer
    from asc_deploy.progress import progress_bar

    model, tokenizer = load_model_and_tokenizer(
        model_source, "encoder", trust_remote_code=trust_remote_code
    )
    examples = task.load_examples("train", max_samples)
    features = task.encode(tokenizer, examples)
    with progress_bar("profiling layer similarity", total=len(features)) as advance:
        profile = profile_similarity(
            model,
            length_sorted_batches(features, batch_size, tokenizer.pad_token_id),
            progress=advance,
        )
    identity = {
        "model": str(model_source),
        "model_hash": hash_folder(model_source) if Path(model_source).is_dir() else None,
        "model_type": model.config.model_type,
        "task": task.name,
        "data": task.data_note,
        "split": "train",
        "max_samples": max_samples,
        "features": len(features),
        "examples_read": len(examples),
    }
    return profile, identity


def similarity_record(profile: SimilarityProfile, identity: dict) -> dict:
    import torch

    return {
        "schema": "asc-deploy.similarity/1",
        "num_layers": profile.num_layers,
        "matrix": profile.matrix.round(6).tolist(),
        "matrix_hash": matrix_hash(profile.matrix),
        "examples": profile.examples,
        "tokens": profile.tokens,
        "states": "0 = embedding output, k = output of encoder layer k",
        "identity": identity,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


def write_similarity(output_dir: Path, record: dict, selections: dict[float, list[int]]) -> None:
    """similarity.json plus a heatmap marking each threshold's removed layers, atomically."""
    from asc_deploy.report.plots import similarity_heatmap

    record = {**record, "selections": {str(t): layers for t, layers in selections.items()}}
    with atomic_dir(output_dir) as tmp:
        write_json_atomic(tmp / SIMILARITY_FILE, record)
        (tmp / HEATMAP_FILE).write_bytes(similarity_heatmap({"similarity": record}))


def read_similarity(path: str | Path) -> dict:
    """A similarity.json (or the folder holding it), checked for shape."""
    from asc_deploy.errors import UserError

    path = Path(path)
    path = path / SIMILARITY_FILE if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"similarity file not found: {path}; run `asc-deploy profile` first")
    record = read_json(path)
    if record.get("schema") != "asc-deploy.similarity/1" or "matrix" not in record:
        raise UserError(f"{path} is not an asc-deploy similarity.json; run `asc-deploy profile`")
    return record
