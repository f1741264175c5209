"""The system under test for MLPerf LoadGen, run inside a fresh worker process.

`measure_scenario(spec)` loads the artifact's real evaluation examples (sample_inputs.npz) as
LoadGen's query sample library, builds one or more inference instances (ONNX Runtime sessions,
or the PyTorch model for `runtime: torch`), serves LoadGen's queries through a dynamic batcher,
runs one LoadGen test and returns the fields parsed from LoadGen's summary log.

The batcher follows Triton's dynamic batcher: an instance takes up to `max_batch_size` queued
samples, waiting at most `max_queue_delay_ms` after the oldest one arrived for the batch to fill;
each batch is padded only to its own longest example (per-query padding at batch size 1).
mlperf_loadgen is imported here only, and only inside the worker: `bench` without scenarios
never needs it.
"""

from __future__ import annotations

import collections
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asc_deploy.errors import UserError

SUMMARY_FILE = "mlperf_log_summary.txt"
INSTALL_HINT = "install the bench extra: pip install 'asc-deploy[bench]' (mlcommons-loadgen)"
SERVER_PERCENTILE = 0.99
SINGLE_STREAM_PERCENTILE = 0.9
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")

Infer = Callable[[dict[str, np.ndarray]], Any]


def import_loadgen():
    """The mlperf_loadgen module, or a UserError saying how to install it."""
    try:
        import mlperf_loadgen
    except ImportError as exc:
        raise UserError(f"serving scenarios need MLPerf LoadGen: {INSTALL_HINT}") from exc
    return mlperf_loadgen


# ---------------------------------------------------------------- queries


class QuerySamples:
    """The real examples LoadGen draws from, each kept at its own token length."""

    def __init__(self, samples: dict[str, np.ndarray], names: Sequence[str]):
        unknown = [n for n in names if n not in _TOKEN_INPUTS]
        if unknown:
            raise UserError(f"model inputs {unknown} are not token inputs the SUT can feed")
        if "input_ids" not in samples or "lengths" not in samples:
            raise UserError("sample inputs need 'input_ids' and 'lengths'; re-export the artifact")
        self.lengths = np.maximum(np.asarray(samples["lengths"], dtype=np.int64), 1)
        if len(self.lengths) == 0:
            raise UserError("the artifact's sample inputs are empty; re-export it with samples")
        ids = samples["input_ids"]
        self.arrays: dict[str, np.ndarray] = {}
        for name in names:
            if name in samples:
                self.arrays[name] = np.ascontiguousarray(samples[name], dtype=np.int64)
            elif name == "token_type_ids":
                self.arrays[name] = np.zeros(ids.shape, dtype=np.int64)
            elif name == "position_ids":
                self.arrays[name] = np.tile(np.arange(ids.shape[1], dtype=np.int64), (len(ids), 1))
            else:
                raise UserError(f"sample inputs have no '{name}' array, which the model needs")

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, rows: Sequence[int]) -> dict[str, np.ndarray]:
        """The rows' examples padded to the longest of them (dynamic padding)."""
        width = int(self.lengths[list(rows)].max())
        return {name: a[rows, :width] for name, a in self.arrays.items()}


# ---------------------------------------------------------------- batching


class DynamicBatcher:
    """Queued samples -> batches served by one thread per inference instance."""

    def __init__(
        self,
        instances: Sequence[Infer],
        queries: QuerySamples,
        complete: Callable[[list[int]], None],
        max_batch_size: int = 1,
        max_queue_delay_s: float = 0.0,
        sort_by_length: bool = False,
        inline: bool = False,
    ):
        self.queries = queries
        self.complete = complete
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.sort_by_length = sort_by_length
        self.batch_sizes: list[int] = []
        self.padded_lengths: list[int] = []
        self.model_seconds: list[float] = []  # the model call alone, as the harness times it
        self.errors: list[BaseException] = []
        self._queue: collections.deque[tuple[int, int, float]] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        # Inline (SingleStream): LoadGen's issue thread runs the query itself, no hand-off.
        self._inline = instances[0] if inline else None
        self._threads = [
            threading.Thread(target=self._serve, args=(infer,), daemon=True)
            for infer in ([] if inline else instances)
        ]
        for thread in self._threads:
            thread.start()

    def issue(self, samples: Sequence[tuple[int, int]]) -> None:
        """LoadGen's issue callback: (response id, sample index) pairs join the queue."""
        if self.sort_by_length:  # Offline: neighbours of similar length pad less
            samples = sorted(samples, key=lambda s: self.queries.lengths[s[1]])
        now = time.perf_counter()
        if self._inline is not None:
            for sid, index in samples:
                self._run(self._inline, [(sid, index, now)])
            return
        with self._cond:
            self._queue.extend((sid, index, now) for sid, index in samples)
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        if self.errors:
            raise self.errors[0]

    def _next_batch(self) -> list[tuple[int, int, float]] | None:
        with self._cond:
            while True:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return None
                # Wait for a full batch, but never past the oldest sample's queue delay.
                deadline = self._queue[0][2] + self.max_queue_delay_s
                while len(self._queue) < self.max_batch_size and not self._stopping:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._queue:  # another instance may have taken them while this one waited
                    take = min(self.max_batch_size, len(self._queue))
                    return [self._queue.popleft() for _ in range(take)]

    def _serve(self, infer: Infer) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(infer, batch)

    def _run(self, infer: Infer, batch: list[tuple[int, int, float]]) -> None:
        rows = [index for _, index, _ in batch]
        try:
            feed = self.queries.batch(rows)
            started = time.perf_counter()
            infer(feed)
            self.model_seconds.append(time.perf_counter() - started)
        except BaseException as exc:  # reported by stop(); LoadGen still gets its answers
            self.errors.append(exc)
        else:
            self.batch_sizes.append(len(rows))
            self.padded_lengths.append(next(iter(feed.values())).shape[1])
        self.complete([sid for sid, _, _ in batch])

    def stats(self) -> dict[str, Any]:
        sizes = self.batch_sizes or [0]
        model_ms = np.asarray(self.model_seconds or [0.0]) * 1000
        return {
            "count": len(self.batch_sizes),
            "model_p50_ms": round(float(np.percentile(model_ms, 50)), 4),
            "model_p90_ms": round(float(np.percentile(model_ms, 90)), 4),
            "mean_size": round(float(np.mean(sizes)), 3),
            "max_size": int(max(sizes)),
            "mean_padded_length": round(float(np.mean(self.padded_lengths or [0])), 2),
        }


# ---------------------------------------------------------------- inference instances


def ort_instances(spec: dict[str, Any]) -> tuple[list[Infer], list[str], list[str]]:
    """(run functions, graph input names, providers in use): one ORT session per instance."""
    from asc_deploy.measure import inputs as inputs_mod
    from asc_deploy.measure.ort_runner import create_session

    sessions = [
        create_session(
            spec["model_path"],
            provider=spec["provider"],
            intra_op_threads=spec["intra_op_threads"],
            inter_op_threads=spec["inter_op_threads"],
        )
        for _ in range(spec["instances"])
    ]
    graph_inputs = sessions[0].get_inputs()
    dtypes = {i.name: i.type for i in graph_inputs}

    def runner(session) -> Infer:
        # Plain run with host arrays on every provider: the copy to the device is serving cost.
        return lambda feed: session.run(None, inputs_mod.cast_to_graph(feed, dtypes))

    return (
        [runner(s) for s in sessions],
        [i.name for i in graph_inputs],
        sessions[0].get_providers(),
    )


def torch_instances(spec: dict[str, Any]) -> tuple[list[Infer], list[str], list[str]]:
    """The PyTorch model (shared by every instance thread: its weights are only read)."""
    from asc_deploy.measure import torch_runner

    torch_runner.set_threads(spec["intra_op_threads"], spec["inter_op_threads"])
    model = torch_runner.load_torch_model(spec["model_path"], spec["variant"])

    def infer(feed: dict[str, np.ndarray]) -> None:
        torch_runner.torch_run_fn(model, [feed])(0)

    return [infer] * spec["instances"], torch_runner.model_input_names(model), ["torch-cpu"]


# ---------------------------------------------------------------- LoadGen


def loadgen_settings(lg, spec: dict[str, Any], sample_count: int):
    """LoadGen TestSettings for the spec's scenario, in PerformanceOnly mode."""
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, spec["scenario"])
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(spec["min_duration_s"] * 1000)
    settings.min_query_count = int(spec["min_query_count"])
    settings.performance_sample_count_override = sample_count
    if spec["scenario"] == "SingleStream":
        settings.single_stream_target_latency_percentile = SINGLE_STREAM_PERCENTILE
        if spec.get("expected_latency_ms"):  # None: LoadGen's default (a probe run)
            settings.single_stream_expected_latency_ns = int(spec["expected_latency_ms"] * 1e6)
    elif spec["scenario"] == "Server":
        settings.server_target_qps = float(spec["target_qps"])
        settings.server_target_latency_ns = int(spec["latency_bound_ms"] * 1e6)
        settings.server_target_latency_percentile = SERVER_PERCENTILE
    else:
        settings.offline_expected_qps = float(spec["expected_qps"])
    return settings


def run_loadgen(lg, spec: dict[str, Any], queries: QuerySamples, instances: list[Infer]) -> dict:
    """One LoadGen test against the batcher; returns the parsed summary and batch statistics."""

    def complete(ids: list[int]) -> None:
        # PerformanceOnly: LoadGen needs the answer's timing, not its bytes.
        lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])

    batcher = DynamicBatcher(
        instances,
        queries,
        complete,
        max_batch_size=spec["max_batch_size"],
        max_queue_delay_s=spec["max_queue_delay_ms"] / 1000.0,
        sort_by_length=spec["sort_by_length"],
        inline=spec["scenario"] == "SingleStream",
    )
    sut = lg.ConstructSUT(lambda qs: batcher.issue([(q.id, q.index) for q in qs]), lambda: None)
    qsl = lg.ConstructQSL(len(queries), len(queries), lambda _: None, lambda _: None)
    try:
        with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
            log_dir = Path(spec.get("log_dir") or tmp)
            log_dir.mkdir(parents=True, exist_ok=True)
            log = lg.LogSettings()
            log.log_output.outdir = str(log_dir)
            log.log_output.copy_summary_to_stdout = False
            lg.StartTestWithLogSettings(sut, qsl, loadgen_settings(lg, spec, len(queries)), log)
            summary_text = (log_dir / SUMMARY_FILE).read_text(encoding="utf-8")
    finally:
        batcher.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    return {"summary": parse_summary(summary_text), "batches": batcher.stats()}


def warm_up(instances: list[Infer], queries: QuerySamples, max_batch: int, calls: int) -> None:
    """Untimed calls on real batches; a model that cannot take them fails here, as a UserError."""
    order = np.argsort(-queries.lengths)  # the longest examples first: the widest shape
    for infer in instances:
        for k in range(max(calls, 1)):
            rows = order[(np.arange(max_batch) + k * max_batch) % len(queries)]
            try:
                infer(queries.batch(rows))
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise UserError(f"the model failed on its sample inputs ({first})") from exc


# LoadGen's issue thread calls back into Python and must take the GIL from the thread running
# the model. A PyTorch forward holds the GIL between its ops, and CPython hands it over only every
# 5 ms by default: queries waited for it, and p99 grew from queueing. Measured on MiniLM-L6 at
# 60 QPS: p99 113 ms at 5 ms, 46 ms at 0.5 ms (ONNX Runtime fp32: 38 -> 27 ms).
GIL_SWITCH_INTERVAL_S = 0.0005


def measure_scenario(spec: dict[str, Any]) -> dict[str, Any]:
    """One LoadGen test of one scenario in this (fresh) process; see scenarios.worker_spec."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    lg = import_loadgen()
    build = torch_instances if spec.get("runtime") == "torch" else ort_instances
    instances, names, providers = build(spec)
    with np.load(spec["sample_inputs"]) as data:
        queries = QuerySamples({k: data[k] for k in data.files}, names)
    warm_up(instances, queries, spec["max_batch_size"], spec["warmup"])
    if spec.get("harness_check"):
        result = side_by_side(lg, spec, queries, instances[0])
    else:
        result = run_loadgen(lg, spec, queries, instances)
    return {
        "ok": True,
        **result,
        "providers": providers,
        "gil_switch_interval_ms": sys.getswitchinterval() * 1000,
        "queries": len(queries),
        "mean_length": round(float(queries.lengths.mean()), 2),
    }


# ---------------------------------------------------------------- SingleStream vs the harness


def side_by_side(lg, spec: dict[str, Any], queries: QuerySamples, infer: Infer) -> dict:
    """SingleStream with the harness's timing loop run before and after it in the same process.

    One process keeps this VM's drift between processes out of the comparison; the batcher also
    times each model call inside the SUT with the harness's clock, so LoadGen's latency can be
    set against the model's at the very same moments.
    """
    seconds = max(1.0, spec["min_duration_s"] / 4)
    before = harness_loop(queries, infer, seconds)
    result = run_loadgen(lg, spec, queries, [infer])
    after = harness_loop(queries, infer, seconds)
    result["harness_check"] = {
        "harness_p90_ms": [before["p90"], after["p90"]],
        "harness_p50_ms": [before["p50"], after["p50"]],
        "harness_iterations": [before["iterations"], after["iterations"]],
        "model_p90_during_ms": result["batches"]["model_p90_ms"],
    }
    return result


def harness_loop(queries: QuerySamples, infer: Infer, seconds: float) -> dict[str, float]:
    """The harness's batch-1 timing over every query once (in a seeded random order, as LoadGen
    draws them), then again until `seconds` have passed."""
    from asc_deploy.measure import latency

    order = np.random.default_rng(0).permutation(len(queries))
    feeds = [queries.batch([int(i)]) for i in order]
    samples = latency.time_callable(
        lambda i: infer(feeds[i % len(feeds)]),
        warmup=0,
        min_iterations=len(feeds),
        min_seconds=seconds,
    )
    return latency.summarize_ms(samples) | {"iterations": len(samples)}


# ---------------------------------------------------------------- summary log

_LINE = re.compile(r"^\s*([^:*=][^:]*?)\s*:\s*(.*?)\s*$")
_ESTIMATE = re.compile(r"Early stopping ([\d.]+)th percentile estimate:\s*(\d+)")


def parse_summary(text: str) -> dict[str, Any]:
    """mlperf_log_summary.txt -> {"result", "fields", "settings", "recommendations", ...}.

    `fields` are the results and statistics ("key : value" lines above "Test Parameters Used");
    `settings` the parameters LoadGen actually used; numbers become int/float.
    """
    fields: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    recommendations: list[str] = []
    target, section = fields, ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Test Parameters Used"):
            target = settings
        elif stripped in ("Recommendations:", "Early Stopping Result:"):
            section = stripped
        elif stripped.startswith("=") or not stripped:
            section = ""
        elif stripped.startswith("* ") and section == "Recommendations:":
            recommendations.append(stripped[2:])
        elif (match := _LINE.match(line)) and not stripped.startswith("*"):
            target[match.group(1)] = _number(match.group(2))
    estimates = {f"p{float(p):g}": int(ns) / 1e6 for p, ns in _ESTIMATE.findall(text)}
    return {
        "result": fields.get("Result is"),
        "fields": fields,
        "settings": settings,
        "recommendations": recommendations,
        "early_stopping_estimate_ms": estimates,
    }


def _number(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value
