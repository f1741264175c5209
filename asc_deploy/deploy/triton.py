"""A Triton Inference Server model repository (onnxruntime backend) for chosen artifacts.

Layout: `<repo>/<name>/1/model.onnx` + `<repo>/<name>/config.pbtxt`. Names, dtypes and dims come
from the artifact's manifest (read from the graph at export). Every config is parsed back into
Triton's own ModelConfig message before the repository is published. No torch here.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from asc_deploy.errors import UserError
from asc_deploy.fsutil import atomic_dir
from asc_deploy.manifest import MODEL_FILE, verify_artifact

TRITON_DTYPES = {
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# The dynamic batcher's largest batch when the user gives none; the served-accuracy evaluation
# measures predictions at this batch too (stages/measure.py), because a server forms it.
DEFAULT_MAX_BATCH_SIZE = 64


def _dims(shape: list[Any]) -> list[int]:
    """Triton dims without the batch axis (max_batch_size > 0); symbolic axes become -1."""
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape[1:]]


def _tensor_block(kind: str, tensors: list[dict[str, Any]]) -> str:
    entries = []
    for t in tensors:
        dtype = TRITON_DTYPES.get(t["dtype"])
        if dtype is None:
            raise UserError(
                f"tensor {t['name']} has dtype {t['dtype']}, "
                "which this repository writer does not map"
            )
        dims = ", ".join(str(d) for d in _dims(t["shape"]))
        entries.append(
            f'  {{\n    name: "{t["name"]}"\n    data_type: {dtype}\n    dims: [ {dims} ]\n  }}'
        )
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def config_pbtxt(
    name: str,
    manifest: dict[str, Any],
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    instance_kind: str = "KIND_CPU",
    instance_count: int = 1,
    max_queue_delay_us: int = 100,
) -> str:
    """The config.pbtxt text for one artifact."""
    preferred = [b for b in (4, 8, 16, 32) if b <= max_batch_size]
    return (
        f'name: "{name}"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {max_batch_size}\n"
        + _tensor_block("input", manifest["inputs"])
        + _tensor_block("output", manifest["outputs"])
        + "instance_group [\n"
        + f"  {{\n    count: {instance_count}\n    kind: {instance_kind}\n  }}\n]\n"
        + "dynamic_batching {\n"
        + (f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n" if preferred else "")
        + f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
    )


def parse_config(text: str):
    """Parse config.pbtxt into Triton's ModelConfig message; UserError if it does not parse."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise UserError(
            f"generated config.pbtxt does not parse as a Triton ModelConfig: {exc}"
        ) from exc


def is_triton_repository(folder: Path) -> bool:
    """Whether every visible entry of `folder` is a model folder with a config.pbtxt."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return all(p.is_dir() and (p / "config.pbtxt").is_file() for p in entries)


def write_triton_repository(
    models: dict[str, str | Path],
    dest: str | Path,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    instance_kind: str = "KIND_CPU",
) -> dict[str, Any]:
    """Add {model name: artifact folder} to the repository `dest`; each artifact verified first.

    Models already in `dest` under other names stay; a model of the same name is replaced
    atomically (its folder only).
    """
    if not models:
        raise UserError(
            "no artifacts given for the Triton repository; pass at least one artifact folder"
        )
    if max_batch_size < 1:
        raise UserError(f"max batch size must be at least 1, got {max_batch_size}")
    if instance_kind not in ("KIND_CPU", "KIND_GPU"):
        raise UserError(f"instance kind must be KIND_CPU or KIND_GPU, got {instance_kind}")
    checked = {}
    for name, folder in models.items():
        if not _NAME.match(name):
            raise UserError(
                f"model name '{name}' is not usable by Triton; use letters, digits, '_', '-', '.'"
            )
        manifest = verify_artifact(folder)
        text = config_pbtxt(name, manifest, max_batch_size, instance_kind)
        parse_config(text)
        checked[name] = (Path(folder), text, manifest)
    summary = {}
    for name, (folder, text, manifest) in checked.items():
        with atomic_dir(Path(dest) / name) as tmp:
            (tmp / "1").mkdir()
            shutil.copy2(folder / MODEL_FILE, tmp / "1" / MODEL_FILE)
            (tmp / "config.pbtxt").write_text(text, encoding="utf-8")
            summary[name] = {
                "artifact": str(folder),
                "variant": manifest.get("variant"),
                "inputs": [i["name"] for i in manifest["inputs"]],
                "outputs": [o["name"] for o in manifest["outputs"]],
            }
    return {"repository": str(dest), "max_batch_size": max_batch_size, "models": summary}
