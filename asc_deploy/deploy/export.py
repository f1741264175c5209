"""PyTorch model folder -> validated fp32 ONNX artifact.

The only module that knows the exporter (optimum-onnx `main_export`, the legacy TorchScript path,
whose graphs ONNX Runtime's optimiser can fuse). Moving to transformers 5 / `torch.onnx.export`
touches this file alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from asc_deploy.deploy import artifacts, validation
from asc_deploy.errors import UserError
from asc_deploy.fsutil import atomic_dir, hash_folder, hash_json
from asc_deploy.manifest import MODEL_FILE
from asc_deploy.tasks.base import MODEL_INPUT_NAMES, Feature, collate

Family = Literal["classification", "question-answering"]
EXPORTER_TASKS = {
    "classification": "text-classification",
    "question-answering": "question-answering",
}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
RECORD_FILES = (
    "pruning.json",
    "finetune.json",
)  # provenance written by the compress/finetune stages
# The TorchScript exporter's range for these encoders: scaled_dot_product_attention needs 14;
# torch's TorchScript exporter stops at 20 (newer opsets need its dynamo exporter).
MIN_OPSET, MAX_OPSET = 14, 20
# Exporter log lines that say nothing about our graphs, silenced on purpose:
# - optimum recommends opset 18; the default 17 is what the fusion and quantisation paths were
#   validated on, and every export is checked against PyTorch on real inputs anyway;
# - the weight-deduplication check needs accelerate and only matters for tied weights (an LM
#   head), which classification and QA heads do not have;
# - optimum itself passes transformers' deprecated `torch_dtype`.
_QUIET_EXPORTER_LINES = {
    "optimum.exporters.onnx.convert": "lower than the recommended minimum opset",
    "optimum.exporters.onnx.base": "Weight deduplication check",
    "transformers.configuration_utils": "`torch_dtype` is deprecated",
    "transformers.modeling_utils": "`torch_dtype` is deprecated",
}


def check_opset(opset: int) -> int:
    """UserError unless the exporter can write these encoders at `opset`."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserError(
            f"--opset {opset} is outside {MIN_OPSET}..{MAX_OPSET}, the opsets the exporter can "
            "write for these encoders; use e.g. 17"
        )
    return opset


def model_summary(model_dir: str | Path) -> dict[str, Any]:
    """Architecture, layer count and provenance records of a from_pretrained folder."""
    from asc_deploy.models.adapters import adapter_for
    from asc_deploy.models.loading import load_config

    model_dir = Path(model_dir)
    config = load_config(model_dir)  # UserError: missing folder, no config.json, unsupported
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        raise UserError(f"{model_dir} has a config but no weights ({' / '.join(WEIGHT_FILES)})")
    summary: dict[str, Any] = {
        "path": str(model_dir),
        "model_type": config.model_type,
        "encoder_layers": getattr(config, adapter_for(config.model_type).num_layers_key),
        "num_attention_heads": getattr(config, "num_attention_heads", None)
        or getattr(config, "n_heads", None),
        "hidden_size": getattr(config, "hidden_size", None) or getattr(config, "dim", None),
    }
    for name in RECORD_FILES:
        path = model_dir / name
        summary[name.removesuffix(".json")] = (
            json.loads(path.read_text()) if path.is_file() else None
        )
    return summary


def validation_batches(
    features: list[Feature], pad_token_id: int, batch_size: int = 8
) -> list[dict[str, np.ndarray]]:
    """Batches of real features of mixed lengths (dynamic padding), at least two rows each."""
    if len(features) < 2:
        raise UserError(
            "validation needs at least 2 task inputs (batch > 1); raise --validate-samples"
        )
    batch_size = max(2, batch_size)
    return [
        collate(features[i : i + batch_size], pad_token_id)
        for i in range(0, len(features), batch_size)
    ]


def torch_reference(
    model, batches: list[dict[str, np.ndarray]], input_names: list[str]
) -> list[dict[str, np.ndarray]]:
    """The PyTorch model's outputs on the same inputs the ONNX graph is fed."""
    import torch

    outputs = []
    with torch.inference_mode():
        for batch in batches:
            feed = {k: torch.from_numpy(batch[k]) for k in input_names if k in batch}
            result = model(**feed)
            names = ("logits",) if "logits" in result else ("start_logits", "end_logits")
            outputs.append({n: result[n].float().numpy() for n in names})
    return outputs


def _load_torch_model(model_dir: Path, family: Family):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    factory = (
        AutoModelForSequenceClassification
        if family == "classification"
        else AutoModelForQuestionAnswering
    )
    return factory.from_pretrained(str(model_dir)).eval()


class _DropLine(logging.Filter):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        return self.needle not in record.getMessage()


@contextlib.contextmanager
def _quiet_exporter_logs():
    filters = [(logging.getLogger(n), _DropLine(t)) for n, t in _QUIET_EXPORTER_LINES.items()]
    for logger, line_filter in filters:
        logger.addFilter(line_filter)
    try:
        yield
    finally:
        for logger, line_filter in filters:
            logger.removeFilter(line_filter)


def _run_exporter(model_dir: Path, out: Path, family: Family, opset: int) -> None:
    import warnings

    from optimum.exporters.onnx import main_export

    with warnings.catch_warnings(), _quiet_exporter_logs():
        # Tracing warns about every Python-side constant; validation below is what counts.
        warnings.filterwarnings("ignore", message=".*[Tt]race.*")
        main_export(
            str(model_dir),
            output=out,
            task=EXPORTER_TASKS[family],
            opset=opset,
            do_validation=False,  # ours below runs on real task inputs, not random ones
            local_files_only=True,
            library_name="transformers",
        )
    if not (out / MODEL_FILE).is_file():
        raise RuntimeError(f"the exporter wrote no {MODEL_FILE} into {out}")


def export_inputs_hash(
    model_dir: Path, family: Family, opset: int, validation_features, sample_features
) -> str:
    """Everything the fp32 artifact depends on: weights, task, opset, inputs, exporter versions."""

    def model_inputs(features):
        return [{k: f[k] for k in MODEL_INPUT_NAMES if k in f} for f in features]

    versions = artifacts.library_versions()
    return hash_json(
        {
            "model": hash_folder(model_dir),
            "family": family,
            "opset": opset,
            "validation": model_inputs(validation_features),
            "samples": model_inputs(sample_features),
            "versions": {
                k: versions.get(k)
                for k in ("optimum", "optimum-onnx", "transformers", "torch", "onnx")
            },
        }
    )


def export_artifact(
    model_dir: str | Path,
    dest: str | Path,
    family: Family,
    validation_features: list[Feature],
    sample_features: list[Feature] | None = None,
    opset: int = 17,
    name: str | None = None,
    task_name: str | None = None,
    batch_size: int = 8,
    reuse: bool = True,
) -> dict[str, Any]:
    """Export `model_dir` to an fp32 ONNX artifact at `dest`, validated against PyTorch.

    `validation_features` are real task inputs (`task.encode(...)`), several lengths, run in
    batches > 1; `sample_features` (default: the validation ones) are saved as sample_inputs.npz
    for benchmarking with real lengths. Returns the manifest. Raises UserError when validation
    fails (max |logit diff| > 1e-4 or any prediction differs), leaving nothing at `dest`.
    """
    model_dir, dest = Path(model_dir), Path(dest)
    if family not in EXPORTER_TASKS:
        raise UserError(f"unknown task family '{family}'; use classification or question-answering")
    check_opset(opset)
    summary = model_summary(model_dir)
    samples = sample_features if sample_features is not None else validation_features
    inputs_hash = export_inputs_hash(model_dir, family, opset, validation_features, samples)
    if reuse and (existing := artifacts.reusable_artifact(dest, inputs_hash)):
        return existing | {"reused": True}

    from asc_deploy.measure.ort_runner import create_session
    from asc_deploy.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = validation_batches(validation_features, pad_id, batch_size)
    with atomic_dir(dest) as tmp:
        _run_exporter(model_dir, tmp, family, opset)
        session = create_session(tmp / MODEL_FILE, "cpu")
        input_names = [i.name for i in session.get_inputs()]
        reference = torch_reference(_load_torch_model(model_dir, family), batches, input_names)
        compared = validation.compare_outputs(
            reference,
            validation.run_session(session, batches),
            [b["attention_mask"] for b in batches],
        )
        result = validation.check("fp32", compared, against="pytorch")
        result["lengths"] = sorted({len(f["input_ids"]) for f in validation_features})
        result["batch_size"] = batch_size
        del session
        count = artifacts.write_sample_inputs(tmp, samples, pad_id)
        manifest = artifacts.write_manifest(
            tmp,
            {
                "name": name or model_dir.name,
                "variant": "fp32",
                "task": {"family": family, "name": task_name},
                "inputs_hash": inputs_hash,
                "source": summary,
                "parent": None,
                "encoder_layers": summary["encoder_layers"],
                "settings": {
                    "opset": opset,
                    "exporter": "optimum.exporters.onnx.main_export",
                    "exporter_task": EXPORTER_TASKS[family],
                    "dynamic_axes": ["batch", "sequence"],
                },
                "validation": result,
                "sample_inputs": count,
                "pad_token_id": pad_id,
            },
        )
    return manifest | {"reused": False}
