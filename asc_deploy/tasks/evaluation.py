"""Run a model over a task's evaluation data and score it.

`run_inference` knows nothing of torch: it takes any `forward(batch) -> outputs` over padded
numpy batches, so the PyTorch evaluator here and the ONNX Runtime evaluator share it. Features are
processed longest-first so that dynamic padding wastes little, then put back in order; or, with
`sort_by_length=False`, in arrival order as a server's dynamic batcher groups requests.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asc_deploy.fsutil import write_text_atomic
from asc_deploy.tasks.base import Example, Feature, Task, collate

Forward = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
OUTPUT_NAMES = ("logits", "start_logits", "end_logits", "cls")


@dataclass
class EvalResult:
    metrics: dict[str, float]
    predictions: list[dict[str, Any]]
    cls_vectors: np.ndarray | None = None  # (examples, hidden): final-layer [CLS], first window
    seconds: float = 0.0
    num_examples: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def infer_features(
    forward: Forward,
    features: list[Feature],
    batch_size: int,
    pad_token_id: int,
    progress: bool = True,
    sort_by_length: bool = True,
) -> list[dict[str, np.ndarray]]:
    """Per-feature outputs, unpadded: logits (labels,), start/end_logits (len,), cls (hidden,)."""
    order = list(range(len(features)))
    if sort_by_length:
        order.sort(key=lambda i: -len(features[i]["input_ids"]))
    outputs: list[dict[str, np.ndarray] | None] = [None] * len(features)
    with _progress(progress, len(features)) as advance:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate([features[i] for i in chunk], pad_token_id)
            result = forward(batch)
            for row, i in enumerate(chunk):
                outputs[i] = _unpad(result, row, len(features[i]["input_ids"]))
            advance(len(chunk))
    return outputs  # type: ignore[return-value]


def run_inference(
    forward: Forward,
    task: Task,
    examples: list[Example],
    features: list[Feature],
    batch_size: int,
    pad_token_id: int,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One prediction record per example, from any forward function over numpy batches."""
    outputs = infer_features(forward, features, batch_size, pad_token_id, progress)
    return task.predictions_from_outputs(examples, features, outputs)


def cls_vectors_from_outputs(
    features: list[Feature], outputs: list[dict[str, np.ndarray]]
) -> np.ndarray:
    """One [CLS] vector per example: that of its first feature (QA: the first window)."""
    first: dict[int, np.ndarray] = {}
    for feature, out in zip(features, outputs, strict=True):
        first.setdefault(feature["example_index"], out["cls"])
    return np.stack([first[i] for i in sorted(first)]).astype(np.float32)


def torch_forward(model, with_cls: bool = False) -> Forward:
    """Adapt a transformers model to `forward(batch) -> {"logits"} or start/end logits`."""
    import torch

    accepted = _accepted_inputs(model)

    def forward(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {k: torch.from_numpy(v) for k, v in batch.items() if k in accepted}
        with torch.inference_mode():
            out = model(**inputs, output_hidden_states=with_cls)
        result = {
            k: out[k].float().numpy() for k in ("logits", "start_logits", "end_logits") if k in out
        }
        if with_cls:
            result["cls"] = out.hidden_states[-1][:, 0].float().numpy()
        return result

    return forward


def evaluate_torch(
    model,
    tokenizer,
    task: Task,
    max_samples: int | None = None,
    batch_size: int = 64,
    with_cls: bool = True,
    progress: bool = True,
    sort_by_length: bool = True,
) -> EvalResult:
    """Metrics, per-example predictions and [CLS] vectors of a PyTorch model on the eval split."""
    model.eval()
    examples = task.load_examples("eval", max_samples)
    features = task.encode(tokenizer, examples)
    started = time.perf_counter()
    forward = torch_forward(model, with_cls)
    outputs = infer_features(
        forward, features, batch_size, _pad_id(tokenizer), progress, sort_by_length
    )
    seconds = time.perf_counter() - started
    predictions = task.predictions_from_outputs(examples, features, outputs)
    return EvalResult(
        metrics=task.compute_metrics(examples, predictions),
        predictions=predictions,
        cls_vectors=cls_vectors_from_outputs(features, outputs) if with_cls else None,
        seconds=seconds,
        num_examples=len(examples),
        info={
            "features": len(features),
            "batch_size": batch_size,
            "examples_per_s": len(examples) / seconds,
        },
    )


def collect_cls_vectors(
    model, tokenizer, task: Task, max_samples: int | None = None, batch_size: int = 64
) -> np.ndarray:
    """Final-layer [CLS] vectors of the eval examples, for kNN representation agreement."""
    return evaluate_torch(
        model, tokenizer, task, max_samples, batch_size, with_cls=True
    ).cls_vectors


def cls_path_for(predictions_path: str | Path) -> Path:
    """Where the [CLS] vectors live next to a predictions file: predictions.jsonl -> .cls.npy."""
    path = Path(predictions_path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".cls.npy")


def save_predictions(
    path: str | Path, predictions: list[dict[str, Any]], cls_vectors: np.ndarray | None = None
) -> Path:
    """Write predictions as JSONL (one record per example), and [CLS] vectors as .npy beside it."""
    path = Path(path)
    write_text_atomic(path, "".join(json.dumps(p, default=_json_value) + "\n" for p in predictions))
    if cls_vectors is not None:
        target = cls_path_for(path)
        tmp = target.with_name(f".{target.name}.tmp.npy")
        np.save(tmp, cls_vectors)
        tmp.replace(target)
    return path


def prediction_flips(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> int:
    """How many examples two runs over the same examples predict differently."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} predictions against {len(second)}: not the same examples")
    return sum(a["prediction"] != b["prediction"] for a, b in zip(first, second, strict=True))


def load_predictions(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _json_value(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _unpad(result: dict[str, np.ndarray], row: int, length: int) -> dict[str, np.ndarray]:
    out = {}
    for name in OUTPUT_NAMES:
        if name in result:
            value = result[name][row]
            out[name] = value[:length] if name in ("start_logits", "end_logits") else value
    return out


def _accepted_inputs(model) -> set[str]:
    import inspect

    params = inspect.signature(model.forward).parameters
    return {name for name in ("input_ids", "attention_mask", "token_type_ids") if name in params}


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    """`advance(n)`: the shared progress (a live bar on a terminal, periodic lines in a CI log)."""
    if not enabled:
        yield lambda n: None
        return
    from asc_deploy.progress import progress_bar

    with progress_bar("inference", total) as advance:
        yield advance
