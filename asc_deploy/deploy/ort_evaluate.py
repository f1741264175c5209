"""Task accuracy of an ONNX artifact itself, through onnxruntime only (no PyTorch in the loop).

Uses the same feature encoding, batching, postprocessing and metrics as the PyTorch evaluator
(`asc_deploy.tasks.evaluation.run_inference` / `infer_features`), so the two agree by construction
except for the runtime.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from asc_deploy.errors import UserError
from asc_deploy.manifest import MODEL_FILE, verify_artifact
from asc_deploy.tasks.base import Task
from asc_deploy.tasks.evaluation import EvalResult, Forward, infer_features


def onnx_forward(session) -> Forward:
    """forward(batch) -> outputs by name ("logits" or "start_logits"/"end_logits"), fp32."""
    from asc_deploy.measure.ort_runner import run_logits

    names = [o.name for o in session.get_outputs()]

    def forward(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = run_logits(session, batch, names)
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, values, strict=True)}

    return forward


class TaskMismatchWarning(UserWarning):
    """The artifact was exported for another task with the same output shape."""


def check_artifact_task(manifest: dict, artifact_dir: Path, task: Task) -> None:
    """UserError when the artifact cannot answer `task` (family, label count); warn on its name.

    A 2-label graph scored on a 3-label task yields an accuracy that means nothing.
    """
    recorded = manifest.get("task") or {}
    family = recorded.get("family")
    if family and family != task.family:
        raise UserError(
            f"artifact {artifact_dir} is a {family} model but task '{task.name}' is {task.family}"
        )
    if task.family == "classification":
        labels = _graph_labels(manifest)
        if labels is not None and labels != len(task.label_names):
            raise UserError(
                f"artifact {artifact_dir} predicts {labels} labels but task {task.name} has "
                f"{len(task.label_names)}; evaluate it on the task it was exported for"
                + (f" ({recorded['name']})" if recorded.get("name") else "")
            )
    if recorded.get("name") and recorded["name"] != task.name:
        warnings.warn(
            f"artifact {artifact_dir} was exported for task {recorded['name']}, "
            f"evaluated here on {task.name}",
            TaskMismatchWarning,
            stacklevel=2,
        )


def _graph_labels(manifest: dict) -> int | None:
    """The logits width the graph declares (None when symbolic or not recorded)."""
    for output in manifest.get("outputs") or []:
        shape = output.get("shape") or []
        if output.get("name") == "logits" and shape and isinstance(shape[-1], int):
            return shape[-1]
    return None


def evaluate_onnx(
    artifact_dir: str | Path,
    task: Task,
    max_samples: int | None = None,
    provider: str = "cpu",
    batch_size: int = 64,
    intra_op_threads: int | None = None,
    progress: bool = True,
    sort_by_length: bool = True,
) -> EvalResult:
    """Metrics and per-example predictions of the artifact's graph on the task's eval split."""
    from transformers import AutoTokenizer  # the tokenizer only; torch is never imported for it

    from asc_deploy.measure.ort_runner import create_session

    artifact_dir = Path(artifact_dir)
    manifest = verify_artifact(artifact_dir)
    check_artifact_task(manifest, artifact_dir, task)
    session = create_session(artifact_dir / MODEL_FILE, provider, intra_op_threads=intra_op_threads)
    tokenizer = AutoTokenizer.from_pretrained(str(artifact_dir))
    pad_id = manifest.get("pad_token_id")
    if pad_id is None:
        pad_id = tokenizer.pad_token_id or 0
    examples = task.load_examples("eval", max_samples)
    features = task.encode(tokenizer, examples)
    started = time.perf_counter()
    forward = onnx_forward(session)
    outputs = infer_features(forward, features, batch_size, pad_id, progress, sort_by_length)
    seconds = time.perf_counter() - started
    predictions = task.predictions_from_outputs(examples, features, outputs)
    return EvalResult(
        metrics=task.compute_metrics(examples, predictions),
        predictions=predictions,
        seconds=seconds,
        num_examples=len(examples),
        info={
            "runtime": "onnxruntime",
            "artifact": str(artifact_dir),
            "variant": manifest.get("variant"),
            "provider": session.get_providers()[0],
            "size_bytes": manifest.get("size_bytes"),
            "features": len(features),
            "batch_size": batch_size,
            "examples_per_s": len(examples) / seconds if seconds else None,
        },
    )
