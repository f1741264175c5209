"""Artifact folders: `model.onnx` + tokenizer + config + `manifest.json` + `sample_inputs.npz`.

Layout: `exports/<run>/<model-name>/<variant>/`. The manifest (schema `asc-deploy.artifact/1`)
records the sha256 and size of every file, the graph's inputs and outputs, where the model came
from (its pruning and fine-tuning records), the variant's settings, the validation results and
the library versions, plus `inputs_hash`: the hash of everything that went in, so a rerun with
identical inputs reuses the artifact instead of rebuilding it.

Reading and verifying a manifest is asc_deploy/manifest.py's job, below both deploy and the
bench that checks every artifact it times; this module writes them. Imports neither torch nor
transformers.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from asc_deploy.errors import UserError
from asc_deploy.fsutil import sha256_file, utc_now, write_json_atomic
from asc_deploy.manifest import MANIFEST, MODEL_FILE, SAMPLE_INPUTS, SCHEMA, verify_artifact

# Files the exporter writes next to the graph that every variant of the same model shares.
SHARED_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spm.model",
)
VERSIONED_LIBRARIES = (
    "asc-deploy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "optimum",
    "optimum-onnx",
    "transformers",
    "torch",
    "tokenizers",
    "numpy",
)
_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 10: "float16", 11: "float64", 16: "bfloat16"}


def library_versions() -> dict[str, str | None]:
    """Installed versions (None where a library is absent), read without importing them."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_onnx(model_path: str | Path) -> dict[str, Any]:
    """Opset, inputs/outputs (name, shape with symbolic dims as names, dtype), parameter count."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)

    def io(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [
                d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
                for d in t.shape.dim
            ]
            out.append(
                {
                    "name": v.name,
                    "shape": shape,
                    "dtype": _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)),
                }
            )
        return out

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    parameters = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    return {
        "opset": opset,
        "inputs": io(model.graph.input),
        "outputs": io(model.graph.output),
        "parameters": parameters,
        "nodes": len(model.graph.node),
    }


def file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file in the artifact except the manifest itself."""
    records = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        records[str(f.relative_to(folder))] = {"sha256": sha256_file(f), "size": f.stat().st_size}
    return records


def write_manifest(folder: str | Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Describe the finished folder (files, graph, versions) plus `fields`; write the manifest."""
    folder = Path(folder)
    graph = describe_onnx(folder / MODEL_FILE)
    files = file_records(folder)
    manifest = {
        "schema": SCHEMA,
        "created": utc_now(),
        **fields,
        "opset": graph["opset"],
        "inputs": graph["inputs"],
        "outputs": graph["outputs"],
        "parameters": graph["parameters"],
        "size_bytes": files[MODEL_FILE]["size"],
        "files": files,
        "versions": library_versions(),
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


# Variants whose graph is still float32: the only ones quantisation and optimisation accept.
FLOAT32_VARIANTS = ("fp32", "optimized")


def require_float32_parent(manifest: dict[str, Any], folder: str | Path, action: str) -> None:
    """UserError unless the artifact's graph is float32 (quantising int8 or fp16 again breaks)."""
    variant = manifest.get("variant")
    if variant not in FLOAT32_VARIANTS:
        raise UserError(
            f"{action} needs an fp32 artifact, but {folder} is {variant}; pass the exported "
            "fp32 folder (or its optimized variant)"
        )


def reusable_artifact(folder: str | Path, inputs_hash: str) -> dict[str, Any] | None:
    """The manifest of an intact artifact built from the same inputs, else None (rebuild)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return None
    try:
        manifest = verify_artifact(folder)
    except UserError:
        return None
    return manifest if manifest.get("inputs_hash") == inputs_hash else None


def copy_shared_files(src: str | Path, dest: str | Path) -> None:
    """Tokenizer, config and sample inputs travel unchanged from one variant to the next."""
    src, dest = Path(src), Path(dest)
    for name in (*SHARED_FILES, SAMPLE_INPUTS):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def write_sample_inputs(
    folder: str | Path, features: list[dict[str, Any]], pad_token_id: int, limit: int = 300
) -> int:
    """Save up to `limit` real tokenised inputs, padded, with their lengths; returns the count."""
    rows = features[:limit]
    if not rows:
        return 0
    width = max(len(f["input_ids"]) for f in rows)
    arrays: dict[str, np.ndarray] = {
        "lengths": np.asarray([len(f["input_ids"]) for f in rows], dtype=np.int64)
    }
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        pad = pad_token_id if name == "input_ids" else 0
        values = np.full((len(rows), width), pad, dtype=np.int64)
        for i, f in enumerate(rows):
            row = f.get(name)
            if row is None:  # tokenizers without segment ids (RoBERTa, DistilBERT, MPNet)
                row = [0] * len(f["input_ids"])
            values[i, : len(row)] = row
        arrays[name] = values
    np.savez_compressed(Path(folder) / SAMPLE_INPUTS, **arrays)
    return len(rows)


def load_sample_inputs(folder: str | Path) -> dict[str, np.ndarray]:
    path = Path(folder) / SAMPLE_INPUTS
    if not path.is_file():
        raise UserError(
            f"{folder} has no {SAMPLE_INPUTS}; re-export the artifact with sample inputs"
        )
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def sample_batches(
    samples: dict[str, np.ndarray], batch_size: int = 8, limit: int | None = None
) -> list[dict[str, np.ndarray]]:
    """Cut saved samples into batches trimmed to each batch's longest row (real lengths kept)."""
    n = len(samples["lengths"]) if limit is None else min(limit, len(samples["lengths"]))
    batches = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        width = int(samples["lengths"][start:stop].max())
        batches.append(
            {k: v[start:stop, :width] for k, v in samples.items() if k != "lengths"}
            | {"lengths": samples["lengths"][start:stop]}
        )
    return batches
