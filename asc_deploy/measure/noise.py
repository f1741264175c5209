"""How noisy this host is while it measures: a bare `session.run` loop as the yardstick.

A cell's round-to-round p50 spread says whether its number can be trusted, but only against
what this host shows at best. A fixed 10% threshold flagged nearly every cell of a quiet
`make bench` (21-82%): on this project's 2-core VM, with nothing else running, even a bare
loop's p50 drifts 1-17% between fresh processes over three rounds, while a round under real load
(another job, two CPU burners per core) runs 2-3x slower. A flag that fires everywhere says
nothing, so the harness measures the host with a bare loop, a fixed small MatMul graph run
through the same worker and ONNX Runtime settings as the cells, with no model or data:
- it *settles* first: bare runs until two consecutive p50s agree within SETTLE_TOLERANCE (at
  most SETTLE_RUNS); right after a training stage the first round was slower in nearly every
  cell (10.6 ms, then 8.8 and 8.4);
- it runs once more in every round, interleaved with the cells, and the spread of those p50s
  is the host's *floor* during the very rounds the cells were measured in;
- a cell is noisy when its spread exceeds `threshold(floor, minimum)`: the configured minimum
  (10%) or FLOOR_FACTOR times the floor, whichever is larger;
- a floor above BUSY_FLOOR means the host itself was disturbed (measured: 54-64% with other jobs
  running, at most 17% without): nothing measured then is trusted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asc_deploy.measure.latency import relative_spread, summarize_ms

SETTLE_TOLERANCE = 0.05  # consecutive bare p50s this close: the host has settled
SETTLE_RUNS = 8  # at most this many settling runs (about a second each)
FLOOR_FACTOR = 2.0  # a cell may spread this many times the bare loop's spread
BUSY_FLOOR = 0.30  # a bare loop spreading more than this: the host was disturbed
_SHAPE = (1, 64, 256)  # the bare graph's input: about 1 ms a call on one modern core
_LAYERS = 4


def bare_spec(settings: Any, min_seconds: float | None = None) -> dict[str, Any]:
    """A worker spec for the bare loop with the bench's threads and timing budget."""
    return {
        "kind": "bare",
        "provider": "cpu",
        "intra_op_threads": settings.intra_op_threads,
        "inter_op_threads": settings.inter_op_threads,
        "warmup": settings.warmup,
        "min_iterations": settings.min_iterations,
        "min_seconds": settings.min_seconds if min_seconds is None else min_seconds,
    }


def bare_model_bytes() -> bytes:
    """MatMul + Add + Relu, `_LAYERS` times, with fixed weights: the same graph on every host."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    width = _SHAPE[-1]
    nodes, weights, previous = [], [], "x"
    for i in range(_LAYERS):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        b = np.zeros(width, dtype=np.float32)
        weights += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
            helper.make_node("Relu", [f"a{i}"], [f"h{i}"]),
        ]
        previous = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "bare_loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(_SHAPE))],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, list(_SHAPE))],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the suite supports
    return model.SerializeToString()


def bare_feeds() -> list[dict[str, np.ndarray]]:
    return [{"x": np.random.default_rng(1).standard_normal(_SHAPE, dtype=np.float32)}]


def p50_ms(result: dict[str, Any]) -> float:
    return summarize_ms(result["samples_s"])["p50"]


def settle(run_bare) -> dict[str, Any]:
    """Bare runs until two consecutive p50s agree within SETTLE_TOLERANCE, at most SETTLE_RUNS.

    `run_bare()` runs one bare measurement and returns the worker's result.
    """
    p50s: list[float] = []
    for _ in range(SETTLE_RUNS):
        p50s.append(p50_ms(run_bare()))
        if len(p50s) >= 2 and relative_spread(p50s[-2:]) <= SETTLE_TOLERANCE:
            break
    settled = len(p50s) >= 2 and relative_spread(p50s[-2:]) <= SETTLE_TOLERANCE
    return {"runs": len(p50s), "p50_ms": [round(v, 4) for v in p50s], "settled": settled}


def threshold(floor: float, minimum: float) -> float:
    """The spread above which a cell is noisy: `minimum`, or FLOOR_FACTOR x the host's floor."""
    return round(max(minimum, FLOOR_FACTOR * floor), 4)


def host_busy(floor: float) -> bool:
    """The bare loop itself spread beyond a quiet host's: nothing measured then is trusted."""
    return floor > BUSY_FLOOR


def summary(bare_p50s: list[float], settling: dict[str, Any], minimum: float) -> dict[str, Any]:
    """bench.json's `noise` block: the floor, the threshold cells were judged by, the verdict."""
    floor = relative_spread(bare_p50s)
    return {
        "bare_p50_ms": [round(v, 4) for v in bare_p50s],
        "floor": round(floor, 4),
        "threshold": threshold(floor, minimum),
        "minimum_threshold": minimum,
        "host_busy": host_busy(floor),
        "settle": settling,
    }
