"""Execution-provider names: every spelling a user writes, mapped once to one canonical name.

Configs and flags accept `cpu`, `CPUExecutionProvider`, `cuda`, `tensorrt`, `trt`, ... in any
case; everything past the door (bench cells, measurements, the recommendation, the gates) sees
only the canonical short name, and ONNX Runtime's own name is derived from it in one place.
No heavy imports: the config and the onnxruntime-only bench host both use this module.
"""

from __future__ import annotations

ORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_SPELLINGS = {
    **{short: short for short in ORT_NAMES},
    **{full.lower(): short for short, full in ORT_NAMES.items()},
    "trt": "tensorrt",
    "gpu": "cuda",
}
GPU_PROVIDERS = frozenset({"cuda", "tensorrt"})


def canonical_provider(name: str) -> str:
    """'cpu', 'cuda' or 'tensorrt' for any accepted spelling; ValueError naming the known ones."""
    short = _SPELLINGS.get(str(name).strip().lower())
    if short is None:
        known = ", ".join(sorted(ORT_NAMES))
        raise ValueError(
            f"unknown execution provider '{name}'; use one of {known} "
            "(or ONNX Runtime's full name, e.g. CPUExecutionProvider)"
        )
    return short


def ort_provider_name(name: str) -> str:
    """ONNX Runtime's name (CPUExecutionProvider, ...) for any accepted spelling."""
    return ORT_NAMES[canonical_provider(name)]


def is_gpu(name: str) -> bool:
    return canonical_provider(name) in GPU_PROVIDERS
