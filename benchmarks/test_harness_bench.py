"""pytest-benchmark suite for the harness itself and the ORT evaluation loop.

    .venv/bin/pytest benchmarks/test_harness_bench.py --benchmark-storage=benchmarks/baselines \
        --benchmark-autosave                  # record a baseline
    .venv/bin/pytest benchmarks/test_harness_bench.py --benchmark-storage=benchmarks/baselines \
        --benchmark-compare --benchmark-compare-fail=median:15%   # fail on regression

The model is a small random BERT (2 layers, hidden 128; ~1 ms per call on 1 thread), big enough
that timing overhead would show, small enough to keep the suite at seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from asc_deploy.measure import harness
from asc_deploy.measure.harness import BenchSettings, Cell, onnx_target, run_worker, worker_spec
from asc_deploy.measure.inputs import fixed_feed
from asc_deploy.measure.latency import ort_run_fn, summarize_ms, time_callable
from asc_deploy.measure.ort_runner import create_session, run_logits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_models import export_bert_onnx, export_tiny_bert, make_artifact  # noqa: E402

NAMES = ["input_ids", "attention_mask", "token_type_ids"]
ROUNDS = 9
ITERATIONS = 60


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        vocab_size=1000,
        max_position_embeddings=256,
    )
    model = BertForSequenceClassification(config).eval()
    path = tmp_path_factory.mktemp("bench") / "small-bert.onnx"
    export_bert_onnx(model, path, sequence=64)
    return path


@pytest.fixture(scope="module")
def session(small_bert):
    return create_session(small_bert, "cpu", intra_op_threads=1, inter_op_threads=1)


def bare_loop_p50(session, feed, n: int) -> float:
    """What anyone would write by hand: a perf_counter around session.run."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        session.run(None, feed)
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples)) * 1000


def test_harness_overhead_within_3_percent(benchmark, session):
    """The harness's timing path (the worker's run function + loop) vs a bare loop, interleaved."""
    feed = fixed_feed(NAMES, batch=1, sequence=64, vocab_size=1000)
    fn = ort_run_fn(session, [feed], "cpu")
    bare_loop_p50(session, feed, 20)  # warm both paths alike
    harness_p50, bare_p50 = [], []
    for r in range(ROUNDS):
        # Alternate which goes first so drift over the run favours neither.
        order = ("harness", "bare") if r % 2 == 0 else ("bare", "harness")
        for which in order:
            if which == "harness":
                samples = time_callable(fn, warmup=2, min_iterations=ITERATIONS, min_seconds=0)
                harness_p50.append(summarize_ms(samples)["p50"])
            else:
                bare_p50.append(bare_loop_p50(session, feed, ITERATIONS))
    ratio = float(np.median(harness_p50)) / float(np.median(bare_p50))
    benchmark.extra_info.update(
        harness_p50_ms=float(np.median(harness_p50)),
        bare_p50_ms=float(np.median(bare_p50)),
        ratio=ratio,
    )
    benchmark(fn, 0)
    assert abs(ratio - 1) <= 0.03, f"harness p50 / bare p50 = {ratio:.4f}"


def test_ort_evaluation_loop(benchmark, session):
    """run_logits over dynamically padded batches, as task evaluation does."""
    rng = np.random.default_rng(0)
    batches = []
    for length in (17, 33, 48, 64):
        feed = fixed_feed(
            NAMES, batch=8, sequence=length, vocab_size=1000, seed=int(rng.integers(1000))
        )
        batches.append(feed)

    def evaluate():
        return [run_logits(session, b)[0] for b in batches]

    logits = benchmark(evaluate)
    assert [lg.shape for lg in logits] == [(8, 2)] * 4


def test_worker_roundtrip(benchmark, small_bert):
    """One fresh-process measurement end to end: the fixed cost the harness pays per cell."""
    settings = BenchSettings(
        warmup=1, min_iterations=5, min_seconds=0, intra_op_threads=1
    ).validated()
    spec = worker_spec(Cell(onnx_target(small_bert), "cpu", 1, 32), settings, None)
    result = benchmark.pedantic(run_worker, args=(spec,), rounds=3, iterations=1)
    assert result["ok"] and len(result["samples_s"]) == 5


class SyntheticLoad:
    """A runner that measures cells for real, with CPU burners (two per core) running during the
    cell measurements numbered in `loaded_calls` (1-based); the bare loop is scripted."""

    def __init__(self, loaded_calls):
        self.loaded_calls = loaded_calls
        self.cells = 0

    def __call__(self, spec, timeout):
        if spec.get("kind") == "bare":
            # The host's noise floor is scripted as a steady loop, so cells are judged at
            # exactly noise_threshold: a VM hiccup during a real bare run once raised the
            # threshold above what the burners cause (spread 75%, round p50s 8.0 / 2.0 / 8.0
            # ms, not flagged). Calibration from the bare loop has its own scripted tests.
            return {"samples_s": [0.001] * 10}
        self.cells += 1
        if self.cells not in self.loaded_calls:
            return harness.run_worker(spec, timeout)
        burners = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(2 * (os.cpu_count() or 1))
        ]
        try:
            time.sleep(0.3)  # let them take the cores
            return harness.run_worker(spec, timeout)
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()


def test_a_quiet_run_is_clean_and_a_loaded_round_is_caught_and_measured_again(tmp_path):
    """Noise detection end to end, on real timings: the scripted tests in tests/test_harness.py
    pin the logic; this checks that real CPU contention is what it catches. Real timings, so it
    lives here and not in the CI suite, where a busy host made a quiet round look loaded."""
    onnx_path = export_tiny_bert(tmp_path / "tiny.onnx")
    artifact = make_artifact(tmp_path / "run" / "tiny" / "fp32", onnx_path)

    def bench(load: SyntheticLoad, retries: int) -> dict:
        settings = harness.BenchSettings(
            batch_sizes=(8,),
            sequence_lengths=(128,),  # calls of tens of ms: longer than a scheduler slice
            warmup=2,
            min_iterations=10,
            min_seconds=0.3,
            rounds=3,
            intra_op_threads=2,
            noise_retries=retries,
            # Above the 5-25% a 2 ms cell drifts between fresh processes on an idle 2-core VM,
            # far below what the burners cause (2-3x slower rounds).
            noise_threshold=0.35,
        )
        doc = harness.run_bench(harness.resolve_targets([str(artifact)]), settings, runner=load)
        return doc["measurements"][0]

    quiet = bench(SyntheticLoad(set()), retries=2)
    assert not quiet["noisy"], quiet["round_p50_ms"]
    # Load during round 2 only: caught, and measured again until the loaded round has left
    # the latest three (two more rounds); then trusted.
    once = bench(SyntheticLoad({2}), retries=2)
    assert once["remeasured"] == 2 and not once["noisy"], once["round_p50_ms"]
    # Load again during the retry: still noisy, so flagged.
    stays = bench(SyntheticLoad({2, 4}), retries=1)
    assert stays["remeasured"] == 1 and stays["noisy"], stays["round_p50_ms"]
