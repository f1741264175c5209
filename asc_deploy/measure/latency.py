"""The timing loop: warm-up, then at least N iterations AND at least T seconds, then percentiles.

Imports neither torch nor onnxruntime at module level: the loop times any callable, and the
ONNX Runtime run functions below take the session (and the `onnxruntime` module, for tests) in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def time_callable(
    fn: Callable[[int], Any],
    warmup: int = 5,
    min_iterations: int = 20,
    min_seconds: float = 1.0,
    max_iterations: int | None = None,
) -> list[float]:
    """Seconds per call of `fn(i)` (i = iteration index), after `warmup` untimed calls.

    Stops once both `min_iterations` calls and `min_seconds` of timed work are done, so a fast
    model gets enough samples for its tail percentiles and a slow one still gets N of them.
    `fn` must block until its work is finished (the CUDA run function synchronises).
    """
    if min_iterations < 1:
        raise ValueError("min_iterations must be at least 1")
    for i in range(warmup):
        fn(i)
    samples: list[float] = []
    clock = time.perf_counter
    started = clock()
    i = 0
    while True:
        t0 = clock()
        fn(i)
        samples.append(clock() - t0)
        i += 1
        if i >= min_iterations and clock() - started >= min_seconds:
            break
        if max_iterations is not None and i >= max_iterations:
            break
    return samples


def summarize_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """mean/std/min/max and p50..p99 in milliseconds (linear-interpolated percentiles)."""
    if not samples_s:
        raise ValueError("no latency samples to summarise")
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    stats = {
        "mean": float(ms.mean()),
        "std": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "min": float(ms.min()),
        "max": float(ms.max()),
    }
    for p, value in zip(PERCENTILES, np.percentile(ms, PERCENTILES), strict=True):
        stats[f"p{p}"] = float(value)
    return stats


def throughput_per_s(samples_s: Sequence[float], batch: int) -> float:
    """Examples per second over the timed calls (total examples / total time)."""
    total = math.fsum(samples_s)
    return batch * len(samples_s) / total if total > 0 else 0.0


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / median: how far apart the rounds' p50s are, as a fraction."""
    if len(values) < 2:
        return 0.0
    median = float(np.median(values))
    return (max(values) - min(values)) / median if median > 0 else 0.0


def is_gpu_provider(provider: str) -> bool:
    from asc_deploy.providers import is_gpu

    return is_gpu(provider)


def ort_run_fn(session: Any, feeds: Sequence[dict], provider: str = "cpu", ort: Any = None):
    """A `fn(i)` that runs `session` on feeds[i % len(feeds)] and blocks until it is done.

    CPU: plain `session.run`. CUDA/TensorRT: inputs are copied to the device once, outputs are
    bound to the device (so host-device copies do not dominate small batches), and each call
    synchronises inputs and outputs so the clock stops when the GPU has finished.
    """
    if not feeds:
        raise ValueError("at least one input feed is needed")
    if not is_gpu_provider(provider):
        run = session.run
        if len(feeds) == 1:
            feed = feeds[0]
            return lambda i: run(None, feed)
        return lambda i: run(None, feeds[i % len(feeds)])
    if ort is None:
        import onnxruntime as ort
    bound = [_cuda_binding(session, feed, ort) for feed in feeds]
    bindings = [b for b, _ in bound]  # the device values in `bound` stay alive with the closure

    def run_bound(i: int) -> None:
        binding = bindings[i % len(bindings)]
        _ = bound  # keep the device copies referenced for the life of the run function
        binding.synchronize_inputs()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run_bound


def _cuda_binding(session: Any, feed: dict, ort: Any, device_id: int = 0):
    binding = session.io_binding()
    values = []
    for name, array in feed.items():
        # The device copy is made once here, not inside the timed loop.
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", device_id)
        binding.bind_ortvalue_input(name, value)
        values.append(value)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda", device_id)
    return binding, values
