"""`asc-deploy profile`: the similarity matrix of a model on its task's training data, on disk."""

from __future__ import annotations

import platform
from pathlib import Path

from asc_deploy.compress.asc import EPSILON, DepthChoice, SimilarityProfile, profile_similarity
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


def similarity_scale(matrix) -> dict:
    """The numbers that say whether a threshold can bite: adjacent states' similarity S[k-1][k]
    (what a single layer changes) and the largest off-diagonal entry."""
    import numpy as np

    matrix = np.asarray(matrix, dtype=np.float64)
    adjacent = np.diag(matrix, k=1)
    upper = matrix[np.triu_indices(matrix.shape[0], k=1)]
    return {
        "max_adjacent": float(adjacent.max()),
        "max_adjacent_layer": int(adjacent.argmax()) + 1,  # layer k: S[k-1][k]
        "min_adjacent": float(adjacent.min()),
        "max_off_diagonal": float(upper.max()),
    }


def write_similarity(
    output_dir: Path,
    record: dict,
    selections: dict[float, list[int]],
    epsilon: float = EPSILON,
    depths: dict[int, DepthChoice] | None = None,
) -> None:
    """similarity.json plus a heatmap marking each threshold's removed layers, atomically.

    `depths`: ASC at target depths (`asc.threshold_for_depth`), recorded beside the selections.
    """
    record = {
        **record,
        "selections": {str(t): layers for t, layers in selections.items()},
        "epsilon": epsilon,
        "scale": similarity_scale(record["matrix"]),
    }
    if depths:
        record["depths"] = {str(k): choice.record() for k, choice in depths.items()}
    with atomic_dir(output_dir) as tmp:
        write_json_atomic(tmp / SIMILARITY_FILE, record)
        (tmp / HEATMAP_FILE).write_bytes(similarity_heatmap(record))


def similarity_heatmap(record: dict) -> bytes:
    """The matrix with its scale beside the thresholds: each threshold (and t - epsilon, where
    the rule really cuts) drawn on the colorbar, the most similar adjacent pair boxed and named,
    and each threshold's removed layers in a grid beside it."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from asc_deploy.plotting import png_bytes, selection_grid

    matrix = np.asarray(record["matrix"], dtype=np.float64)
    selections = {float(t): v for t, v in (record.get("selections") or {}).items()}
    epsilon = record.get("epsilon", EPSILON)
    scale = similarity_scale(matrix)
    removed = set().union(*selections.values()) if selections else set()
    cuts = [t - epsilon for t in selections]
    fig = Figure(figsize=(12, 5))
    ax, ax_sel = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    # Keep every threshold on the colour scale, even one below the matrix's smallest entry.
    low = min([matrix.min(), *cuts]) - 0.01
    image = ax.imshow(matrix, cmap="viridis", vmin=low, vmax=1.0)
    bar = fig.colorbar(image, ax=ax, shrink=0.8, pad=0.12, label="cosine similarity")
    for t in selections:
        bar.ax.axhline(t, color="tab:red", linewidth=1.5)
        bar.ax.axhline(t - epsilon, color="tab:red", linewidth=0.8, linestyle=":")
        bar.ax.text(
            -0.3,
            t,
            f"t={t:g}",
            color="tab:red",
            fontsize=7,
            ha="right",
            va="center",
            transform=bar.ax.get_yaxis_transform(),
        )
    bar.ax.axhline(scale["max_adjacent"], color="white", linewidth=1.5, linestyle="--")
    k = scale["max_adjacent_layer"]
    ax.add_patch(Rectangle((k - 0.5, k - 1.5), 1, 1, fill=False, edgecolor="white", linewidth=2))
    labels = [str(i) for i in range(len(matrix))]
    ax.set_xticks(range(len(matrix)), labels)
    ax.set_yticks(range(len(matrix)), labels)
    for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        if int(tick.get_text()) in removed:
            tick.set_color("tab:red")
            tick.set_fontweight("bold")
    ax.set_title(
        "Hidden-state similarity (red: removed at some threshold)\n"
        f"max adjacent S[k-1][k] = {scale['max_adjacent']:.3f} (layer {k}, boxed; white dashes "
        f"on the bar); red: thresholds, dotted: t - {epsilon:g}",
        fontsize=9,
    )
    ax.set_xlabel("hidden state / layer (0 = embeddings)")
    selection_grid(ax_sel, selections, len(matrix) - 1)
    return png_bytes(fig)


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
