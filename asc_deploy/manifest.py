"""An artifact folder's manifest: its schema and file names, read and checked file by file.

Deploy writes artifacts (deploy/artifacts.py) and the bench times them on hosts that may have
only onnxruntime (measure/harness.py): both read manifests through this module, which imports
nothing but the standard library and asc_deploy's foundations, so measure needs no deploy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asc_deploy.errors import UserError
from asc_deploy.fsutil import read_json, sha256_file

SCHEMA = "asc-deploy.artifact/1"
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
SAMPLE_INPUTS = "sample_inputs.npz"  # real evaluation inputs the bench can time (`--inputs real`)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise UserError(
            f"{folder} is not an asc-deploy artifact (no {MANIFEST}); run `asc-deploy export`"
        )
    try:
        manifest = read_json(path)
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); re-export the artifact") from exc
    schema = str(manifest.get("schema", ""))
    if (
        not schema.startswith("asc-deploy.artifact/")
        or schema.split("/")[-1] != SCHEMA.split("/")[-1]
    ):
        raise UserError(f"{path}: unknown manifest schema '{schema}' (this version reads {SCHEMA})")
    return manifest


def verify_artifact(folder: str | Path) -> dict[str, Any]:
    """Recompute every file's hash and size; UserError on a missing, truncated or altered file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"artifact folder not found: {folder}")
    manifest = read_manifest(folder)
    for name, record in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise UserError(f"artifact {folder}: file {name} is missing; re-export the artifact")
        size = path.stat().st_size
        if size != record["size"]:
            raise UserError(
                f"artifact {folder}: {name} is {size} bytes, manifest says {record['size']} "
                "(truncated or replaced); re-export the artifact"
            )
        if sha256_file(path) != record["sha256"]:
            raise UserError(
                f"artifact {folder}: {name} does not match its sha256 (altered); re-export it"
            )
    if MODEL_FILE not in manifest.get("files", {}):
        raise UserError(
            f"artifact {folder}: manifest lists no {MODEL_FILE}; re-export the artifact"
        )
    return manifest
