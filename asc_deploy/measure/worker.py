"""One measurement in a fresh process: `python -m asc_deploy.measure.worker < spec.json`.

Reads a JSON spec on stdin, builds the session (or PyTorch model) and inputs, times it, and
prints one JSON line on stdout: `{"ok": true, ...}` or `{"ok": false, "kind": "user"|"internal",
"error": "..."}`. A fresh process per measurement keeps one variant's memory, thread pools and
caches from leaking into the next.

Only a spec with `"runtime": "torch"` imports torch; the ONNX path imports onnxruntime + numpy.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any

from asc_deploy.errors import UserError
from asc_deploy.measure import inputs as inputs_mod
from asc_deploy.measure.latency import is_gpu_provider, ort_run_fn, time_callable
from asc_deploy.measure.memory import MemoryTracker


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement described by `spec` (see harness.worker_spec) in this process."""
    if spec.get("kind") == "loadgen":  # a serving scenario (asc_deploy.measure.scenarios)
        from asc_deploy.measure.loadgen_sut import measure_scenario

        return measure_scenario(spec)
    if spec.get("kind") == "bare":  # the host's noise yardstick (asc_deploy.measure.noise)
        return _measure_bare(spec)
    runtime = spec.get("runtime", "onnxruntime")
    if runtime == "torch":
        return _measure_torch(spec)
    return _measure_ort(spec)


def _measure_ort(spec: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime  # noqa: F401  (loaded before the memory baseline: growth is the model's)

    from asc_deploy.measure.ort_runner import create_session

    gpu = is_gpu_provider(spec["provider"])
    options = _tensorrt_options(spec)
    tracker = MemoryTracker(device_id=0 if gpu else None)
    t0 = time.perf_counter()
    session = create_session(
        spec["model_path"],
        provider=spec["provider"],
        intra_op_threads=spec["intra_op_threads"],
        inter_op_threads=spec["inter_op_threads"],
        graph_optimization=spec.get("graph_optimization", "all"),
        provider_options=options,
    )
    create_ms = (time.perf_counter() - t0) * 1000
    graph_inputs = session.get_inputs()
    names = [i.name for i in graph_inputs]
    dtypes = {i.name: i.type for i in graph_inputs}
    feeds = [inputs_mod.cast_to_graph(f, dtypes) for f in _feeds(spec, names)]
    fn = ort_run_fn(session, feeds, spec["provider"])
    return _timed_result(fn, spec, feeds, create_ms, tracker, session.get_providers())


def _measure_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """A fixed small graph through the same session settings and timing loop as a cell."""
    import onnxruntime as ort

    from asc_deploy.measure import noise

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["intra_op_threads"]
    options.inter_op_num_threads = spec["inter_op_threads"]
    session = ort.InferenceSession(
        noise.bare_model_bytes(), options, providers=["CPUExecutionProvider"]
    )
    feeds = noise.bare_feeds()

    def fn(i: int) -> None:
        session.run(None, feeds[i % len(feeds)])

    for i in range(max(spec["warmup"], 1)):
        fn(i)
    samples = time_callable(
        fn, warmup=0, min_iterations=spec["min_iterations"], min_seconds=spec["min_seconds"]
    )
    return {"ok": True, "samples_s": samples}


def _tensorrt_options(spec: dict[str, Any]) -> dict[str, str] | None:
    """The TensorRT profile for this cell's shape range; None for other providers."""
    from asc_deploy.providers import canonical_provider

    if canonical_provider(spec["provider"]) != "tensorrt":
        return None
    import onnxruntime as ort

    from asc_deploy.measure.tensorrt import tensorrt_provider_options

    # Input names from a bare CPU session: the profile must name exactly the graph's inputs.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    probe = ort.InferenceSession(spec["model_path"], options, providers=["CPUExecutionProvider"])
    names = [i.name for i in probe.get_inputs()]
    del probe
    return tensorrt_provider_options(
        names,
        opt_shape=(spec["batch"], spec["sequence"]),
        max_shape=tuple(spec.get("max_shape") or (spec["batch"], spec["sequence"])),
        fp16=spec.get("tensorrt_fp16", True),
    )


def _measure_torch(spec: dict[str, Any]) -> dict[str, Any]:
    import transformers  # noqa: F401  (loaded before the memory baseline: growth is the model's)

    from asc_deploy.measure import torch_runner

    torch_runner.set_threads(spec["intra_op_threads"], spec["inter_op_threads"])
    tracker = MemoryTracker()
    t0 = time.perf_counter()
    model = torch_runner.load_torch_model(spec["model_path"])
    parameters = torch_runner.parameter_count(model)  # before quantisation hides the weights
    if spec["variant"] == "torch-dynamic-int8":
        model = torch_runner.quantize_dynamic_int8(model)
    create_ms = (time.perf_counter() - t0) * 1000
    limit = torch_runner.max_positions(model)
    if limit is not None and spec["sequence"] > limit:
        raise UserError(
            f"sequence {spec['sequence']} is longer than {spec['model_path']} takes "
            f"({limit} positions); pass --seq {limit} or less"
        )
    feeds = _feeds(spec, torch_runner.model_input_names(model))
    fn = torch_runner.torch_run_fn(model, feeds)
    return _timed_result(fn, spec, feeds, create_ms, tracker, ["torch-cpu"]) | {
        "size_bytes": torch_runner.serialized_size(model),
        "parameters": parameters,
        "flops_per_example": torch_runner.flops_per_example(model, inputs_mod.mean_sequence(feeds)),
    }


def _timed_result(fn, spec, feeds, create_ms: float, tracker, providers: list[str]) -> dict:
    """Warm up, time, and report what every measurement reports."""
    _first_run(fn, spec)
    samples = _time(fn, spec)
    return {
        "ok": True,
        "samples_s": samples,
        "session_create_ms": round(create_ms, 3),
        "memory_mb": tracker.report(),
        "providers": providers,
        "mean_sequence": inputs_mod.mean_sequence(feeds),
    }


def _feeds(spec: dict[str, Any], names: list[str]) -> list[dict]:
    if spec.get("inputs", "fixed") == "real":
        import numpy as np

        with np.load(spec["sample_inputs"]) as data:
            samples = {k: data[k] for k in data.files}
        return inputs_mod.real_feeds(names, samples, spec["batch"], spec["sequence"])
    feed = inputs_mod.fixed_feed(names, spec["batch"], spec["sequence"], spec.get("vocab_size"))
    return [feed]


def _first_run(fn, spec: dict[str, Any]) -> None:
    """One untimed call that turns 'the model cannot take this shape' into a user error."""
    try:
        fn(0)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserError(
            f"{spec['model_path']} failed on batch {spec['batch']} x sequence {spec['sequence']}"
            f" ({first}); the model cannot take this shape, pick a shorter --seq"
        ) from exc


def _time(fn, spec: dict[str, Any]) -> list[float]:
    return time_callable(
        fn,
        warmup=max(spec["warmup"] - 1, 0),  # _first_run was the first warm-up call
        min_iterations=spec["min_iterations"],
        min_seconds=spec["min_seconds"],
        max_iterations=spec.get("max_iterations"),
    )


def main() -> int:
    try:
        spec = json.loads(sys.stdin.read())
        result = measure(spec)
    except UserError as exc:
        result = {"ok": False, "kind": "user", "error": str(exc)}
    except Exception as exc:  # reported to the parent, which shows it with the traceback
        result = {
            "ok": False,
            "kind": "internal",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 2


if __name__ == "__main__":
    sys.exit(main())
