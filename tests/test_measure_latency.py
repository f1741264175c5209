"""Timing loop, statistics, CUDA IO-binding path (mocked), memory, environment, FLOPs, inputs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from asc_deploy.errors import UserError
from asc_deploy.measure import inputs, latency, memory, system
from asc_deploy.measure.flops import flops_per_example, stats_from_graph


def test_time_callable_honours_min_iterations_and_warmup():
    calls = []
    samples = latency.time_callable(calls.append, warmup=3, min_iterations=7, min_seconds=0.0)
    assert len(samples) == 7
    assert calls == [0, 1, 2, 0, 1, 2, 3, 4, 5, 6]  # warm-up indices, then timed ones


def test_time_callable_honours_min_seconds():
    started = time.perf_counter()
    samples = latency.time_callable(
        lambda i: time.sleep(0.002), warmup=0, min_iterations=2, min_seconds=0.05
    )
    elapsed = time.perf_counter() - started
    # It stops at the first call that takes the elapsed wall time past min_seconds, not earlier.
    # (The samples sum to a little less than the wall time: the loop's own work is not timed.)
    assert elapsed >= 0.05
    assert sum(samples[:-1]) < 0.05
    assert len(samples) > 2  # min_seconds, not min_iterations, decided here
    assert all(s >= 0.002 for s in samples)


def test_time_callable_max_iterations_caps_a_slow_loop():
    samples = latency.time_callable(
        lambda i: None, warmup=0, min_iterations=1, min_seconds=60, max_iterations=5
    )
    assert len(samples) == 5


def test_summarize_ms_percentiles_and_spread():
    stats = latency.summarize_ms([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["min"] == pytest.approx(1.0) and stats["max"] == pytest.approx(100.0)
    assert stats["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert latency.throughput_per_s([0.5, 0.5], batch=8) == pytest.approx(16.0)
    assert latency.relative_spread([10.0, 11.0, 12.0]) == pytest.approx(2 / 11)
    assert latency.relative_spread([10.0]) == 0.0
    with pytest.raises(ValueError):
        latency.summarize_ms([])


class FakeSession:
    def __init__(self):
        self.runs = []
        self.bindings = []

    def run(self, outputs, feed):
        self.runs.append(feed)

    def get_outputs(self):
        return [type("O", (), {"name": "logits"})()]

    def io_binding(self):
        binding = FakeBinding()
        self.bindings.append(binding)
        return binding

    def run_with_iobinding(self, binding):
        binding.log.append("run")


class FakeBinding:
    def __init__(self):
        self.log = []
        self.inputs = {}
        self.outputs = {}

    def bind_ortvalue_input(self, name, value):
        self.inputs[name] = value

    def bind_output(self, name, device, device_id):
        self.outputs[name] = (device, device_id)

    def synchronize_inputs(self):
        self.log.append("sync-in")

    def synchronize_outputs(self):
        self.log.append("sync-out")


class FakeOrt:
    class OrtValue:
        copies = []

        @staticmethod
        def ortvalue_from_numpy(array, device, device_id):
            FakeOrt.OrtValue.copies.append((array.shape, device, device_id))
            return ("device-value", device)


def test_cpu_run_fn_cycles_feeds():
    session = FakeSession()
    feeds = [{"x": np.zeros(1)}, {"x": np.ones(1)}]
    fn = latency.ort_run_fn(session, feeds, "cpu")
    for i in range(3):
        fn(i)
    assert [f["x"][0] for f in session.runs] == [0, 1, 0]


def test_cuda_run_fn_binds_once_and_synchronises_every_call():
    session = FakeSession()
    FakeOrt.OrtValue.copies.clear()
    feeds = [{"input_ids": np.zeros((1, 8), np.int64), "attention_mask": np.ones((1, 8), np.int64)}]
    fn = latency.ort_run_fn(session, feeds, "cuda", ort=FakeOrt)
    for i in range(3):
        fn(i)
    (binding,) = session.bindings
    # Inputs copied to the device once, outside the timed calls; outputs stay on the device.
    assert FakeOrt.OrtValue.copies == [((1, 8), "cuda", 0), ((1, 8), "cuda", 0)]
    assert set(binding.inputs) == {"input_ids", "attention_mask"}
    assert binding.outputs == {"logits": ("cuda", 0)}
    assert binding.log == ["sync-in", "run", "sync-out"] * 3
    assert session.runs == []  # never the host-copy path


def test_peak_rss_reads_the_address_space_high_water_mark():
    status = "Name:\tpython\nVmPeak:\t 900000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t 102400 kB\n"
    assert memory.peak_rss_mb(status) == 200.0
    assert memory.peak_rss_mb() >= memory.current_rss_mb() * 0.99


def test_memory_parse_compute_apps_and_fake_smi(tmp_path):
    text = "123, 500\n456, 1200\n123, 100\n"
    assert memory.parse_compute_apps(text, 123) == 600.0
    assert memory.parse_compute_apps(text, 999) is None
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '42, 2048'\n")
    smi.chmod(0o755)
    assert memory.gpu_memory_mb(42, smi=str(smi)) == 2048.0
    tracker = memory.MemoryTracker()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB touched after the baseline
    report = tracker.report()
    assert block.sum() > 0
    assert report["peak_rss"] >= tracker.baseline_mb
    assert report["rss_growth"] >= 50
    assert report["peak_device"] is None


CPUINFO = """processor : 0
model name : Intel(R) Xeon(R) Platinum 8480
flags : fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni
"""


def test_system_cpu_info_and_isa():
    info = system.cpu_info(CPUINFO, machine="x86_64")
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8480"
    assert info["flags"] == ["avx", "avx2", "avx512_vnni", "avx512bw", "avx512f", "fma"]
    assert info["isa"] == "avx512_vnni"
    assert system.isa_level({"avx", "avx2"}, "x86_64") == "avx2"
    assert system.isa_level({"avx512f"}, "x86_64") == "avx512"
    assert system.isa_level(set(), "aarch64") == "arm64"
    gpu = system.parse_gpu_line("NVIDIA H100 80GB HBM3, 550.54.15, 81559\n")
    assert gpu == {
        "name": "NVIDIA H100 80GB HBM3",
        "driver": "550.54.15",
        "memory_gb": 79.6,
        "count": 1,
    }
    assert system.host_fingerprint(info, 16.0, None) == system.host_fingerprint(
        dict(info), 16.0, None
    )
    assert system.host_fingerprint(info, 16.0, None) != system.host_fingerprint(info, 16.0, gpu)


def test_host_info_reads_versions_without_importing_torch():
    import sys

    had_torch = "torch" in sys.modules
    host = system.host_info()
    assert host["versions"]["onnxruntime"]
    assert len(host["fingerprint"]) == 16
    assert host["cpu"]["logical_cores"] >= 1
    if not had_torch:
        assert "torch" not in sys.modules


def _bert_like_graph(hidden=8, inter=32, layers=2, labels=2):
    """A graph with the weight shapes of a BERT encoder; nodes are not meant to run."""
    import onnx
    from onnx import TensorProto, helper

    inits, nodes = [], []

    def weight(name, *dims):
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, dims, [0.0] * int(np.prod(dims))))
        return name

    weight("embeddings.word_embeddings.weight", 50, hidden)
    weight("embeddings.position_embeddings.weight", 64, hidden)
    for k in range(layers):
        for proj in ("q", "k", "v", "o"):
            nodes.append(
                helper.make_node(
                    "MatMul", ["x", weight(f"l{k}.{proj}", hidden, hidden)], [f"{k}{proj}"]
                )
            )
        nodes.append(
            helper.make_node("MatMul", ["x", weight(f"l{k}.in", hidden, inter)], [f"{k}i"])
        )
        nodes.append(
            helper.make_node("MatMul", ["x", weight(f"l{k}.out", inter, hidden)], [f"{k}u"])
        )
        nodes.append(helper.make_node("MatMul", [f"{k}q", f"{k}k"], [f"{k}s"]))  # QK^T
        nodes.append(helper.make_node("MatMul", [f"{k}s", f"{k}v"], [f"{k}c"]))  # PV
    nodes.append(
        helper.make_node(
            "Gemm", ["pooled", weight("classifier", labels, hidden)], ["logits"], transB=1
        )
    )
    nodes.insert(
        -1, helper.make_node("MatMul", ["cls", weight("pooler.w", hidden, hidden)], ["pooled"])
    )
    graph = helper.make_graph(nodes, "g", [], [], initializer=inits)
    return onnx.helper.make_model(graph).graph


def test_flops_and_parameters_from_weights():
    stats = stats_from_graph(_bert_like_graph(hidden=8, inter=32, layers=2, labels=2))
    per_layer = 2 * (4 * 8 * 8 + 2 * 8 * 32)
    assert stats.per_token_flops == 2 * per_layer
    assert stats.per_example_flops == 2 * 8 * 8 + 2 * 2 * 8  # pooler MatMul + classifier Gemm
    assert stats.attention_products == 4
    assert stats.hidden_size == 8
    assert stats.max_positions == 64 and stats.vocab_size == 50
    assert stats.parameters == 50 * 8 + 64 * 8 + 2 * (4 * 64 + 2 * 256) + 64 + 16
    seq = 10
    assert flops_per_example(stats, seq) == 2 * per_layer * seq + 160 + 4 * 2 * seq * seq * 8


def test_fixed_and_real_inputs():
    feed = inputs.fixed_feed(["input_ids", "attention_mask"], batch=2, sequence=5, vocab_size=20)
    assert feed["input_ids"].shape == (2, 5) and feed["input_ids"].dtype == np.int64
    assert feed["input_ids"].min() >= 5 and feed["input_ids"].max() < 20
    assert feed["attention_mask"].sum() == 10
    samples = {
        "input_ids": np.arange(4 * 10).reshape(4, 10),
        "attention_mask": np.ones((4, 10), np.int64),
        "lengths": np.array([3, 10, 4, 2]),
    }
    feeds = inputs.real_feeds(
        ["input_ids", "attention_mask", "token_type_ids"], samples, batch=2, sequence=8
    )
    assert [f["input_ids"].shape for f in feeds] == [(2, 8), (2, 4)]  # 10 capped at 8; max(4, 2)
    assert feeds[1]["token_type_ids"].sum() == 0  # absent in samples: zeros
    assert inputs.mean_sequence(feeds) == 6.0
    wrapped = inputs.real_feeds(["input_ids"], samples, batch=3, sequence=16)
    assert wrapped[1]["input_ids"][:, 0].tolist() == [30, 0, 10]  # rows 3, 0, 1
    cast = inputs.cast_to_graph(feed, {"input_ids": "tensor(int32)"})
    assert cast["input_ids"].dtype == np.int32 and cast["attention_mask"].dtype == np.int64
    with pytest.raises(UserError, match="pixel_values"):
        inputs.fixed_feed(["pixel_values"], 1, 4)
