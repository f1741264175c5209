"""TensorRT execution-provider profile: dynamic-shape ranges, precision and engine cache.

TensorRT builds one engine per optimisation profile; without explicit min/opt/max shapes it
rebuilds whenever an input shape leaves the range seen so far (minutes each on BERT). The profile
here covers batch 1..max and sequence 1..max, tuned for the shape being served, and caches
engines and timing data on disk so only the first session pays for the build. No torch here;
in measure/ because the bench worker opens its TensorRT sessions with it.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache() -> Path:
    """Engine and timing caches: $ASC_TRT_CACHE, else ~/.cache/asc-deploy/trt."""
    return Path(os.environ.get("ASC_TRT_CACHE") or Path.home() / ".cache" / "asc-deploy" / "trt")


def _shapes(names: list[str], batch: int, sequence: int) -> str:
    return ",".join(f"{name}:{batch}x{sequence}" for name in names)


def tensorrt_provider_options(
    input_names: list[str],
    opt_shape: tuple[int, int],
    max_shape: tuple[int, int],
    fp16: bool = True,
    cache_dir: str | Path | None = None,
) -> dict[str, str]:
    """ORT TensorRT EP options for (batch, sequence) inputs named `input_names`.

    `opt_shape` is what TensorRT tunes kernels for; `max_shape` bounds the profile.
    """
    opt_batch, opt_seq = opt_shape
    max_batch, max_seq = max(max_shape[0], opt_batch), max(max_shape[1], opt_seq)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache()
    cache_dir.mkdir(parents=True, exist_ok=True)
    return {
        "trt_profile_min_shapes": _shapes(input_names, 1, 1),
        "trt_profile_opt_shapes": _shapes(input_names, opt_batch, opt_seq),
        "trt_profile_max_shapes": _shapes(input_names, max_batch, max_seq),
        "trt_fp16_enable": "1" if fp16 else "0",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": str(cache_dir),
    }
