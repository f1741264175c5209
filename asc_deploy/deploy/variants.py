"""Derive a variant artifact (optimized, int8, fp16) from a parent artifact, validated and atomic.

Every variant is checked against its parent's graph on the parent's saved real inputs
(sample_inputs.npz); the fp32 parent was itself checked against PyTorch at export. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from asc_deploy.deploy import artifacts, validation
from asc_deploy.fsutil import atomic_dir, hash_json
from asc_deploy.manifest import MODEL_FILE, verify_artifact

# (parent model.onnx, output model.onnx) -> facts about the transformation for the manifest.
Transform = Callable[[Path, Path], dict[str, Any]]
VALIDATION_SAMPLES = 64


def derive_variant(
    parent_dir: str | Path,
    dest: str | Path,
    variant: str,
    settings: dict[str, Any],
    transform: Transform,
    extra_inputs: Any = None,
    provider: str = "cpu",
    reuse: bool = True,
) -> dict[str, Any]:
    """Build `dest` from the verified artifact `parent_dir` with `transform`; returns the manifest.

    Reused as-is when `dest` already holds an intact artifact built from the same parent graph,
    variant, settings and `extra_inputs` (e.g. the calibration set's hash).
    """
    from asc_deploy.measure.ort_runner import create_session, resolve_provider

    parent_dir, dest = Path(parent_dir), Path(dest)
    parent = verify_artifact(parent_dir)
    versions = artifacts.library_versions()
    inputs_hash = hash_json(
        {
            "parent": parent["files"][MODEL_FILE]["sha256"],
            "variant": variant,
            "settings": settings,
            "extra": extra_inputs,
            "versions": {k: versions.get(k) for k in ("onnx", "onnxruntime", "onnxruntime-gpu")},
        }
    )
    if reuse and (existing := artifacts.reusable_artifact(dest, inputs_hash)):
        return existing | {"reused": True}

    samples = artifacts.load_sample_inputs(parent_dir)
    batches = artifacts.sample_batches(samples, batch_size=8, limit=VALIDATION_SAMPLES)
    masks = [b["attention_mask"] for b in batches]
    resolve_provider(provider)  # an unknown provider fails before anything is written
    # Loading the parent first turns an unreadable graph into a one-line UserError.
    reference = validation.run_session(create_session(parent_dir / MODEL_FILE, "cpu"), batches)
    with atomic_dir(dest) as tmp:
        artifacts.copy_shared_files(parent_dir, tmp)
        facts = transform(parent_dir / MODEL_FILE, tmp / MODEL_FILE)
        candidate = validation.run_session(create_session(tmp / MODEL_FILE, provider), batches)
        result = validation.check(
            variant,
            validation.compare_outputs(reference, candidate, masks),
            against=f"{parent['variant']} onnx",
        )
        result["provider"] = provider
        inherited = {
            k: parent.get(k)
            for k in ("name", "task", "source", "encoder_layers", "sample_inputs", "pad_token_id")
        }
        manifest = artifacts.write_manifest(
            tmp,
            {
                **inherited,
                "variant": variant,
                "inputs_hash": inputs_hash,
                "parent": {
                    "path": str(parent_dir),
                    "variant": parent["variant"],
                    "sha256": parent["files"][MODEL_FILE]["sha256"],
                    "validation": parent.get("validation"),
                },
                "settings": settings,
                "transform": facts,
                "validation": result,
            },
        )
    return manifest | {"reused": False}
