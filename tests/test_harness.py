"""The harness: target resolution and verification, planning, interleaving, aggregation, merge."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from bench_models import MAX_POSITIONS, export_tiny_bert, make_artifact

from asc_deploy.errors import UserError
from asc_deploy.measure import harness, noise

FAST = dict(warmup=1, min_iterations=5, min_seconds=0.0, rounds=2, intra_op_threads=1)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return export_tiny_bert(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture
def artifact(tmp_path, tiny_onnx):
    return make_artifact(tmp_path / "run" / "tiny" / "fp32", tiny_onnx)


def test_artifact_target_is_verified_and_described(artifact, tiny_onnx):
    (target,) = harness.resolve_targets([str(artifact)])
    assert target.verified and target.note is None
    assert (target.model, target.variant) == ("tiny", "fp32")
    assert target.max_positions == MAX_POSITIONS
    assert target.size_bytes == tiny_onnx.stat().st_size
    assert target.sample_inputs == artifact / "sample_inputs.npz"
    assert target.stats.hidden_size == 32 and target.stats.attention_products == 4  # 2 layers
    (bare,) = harness.resolve_targets([str(tiny_onnx)])
    assert not bare.verified and "no manifest" in bare.note
    assert bare.max_positions == MAX_POSITIONS  # from the position-embedding table
    assert bare.parameters == target.parameters


def test_glob_and_missing_targets(artifact, tmp_path):
    assert len(harness.resolve_targets([str(tmp_path / "run" / "*" / "fp32")])) == 1
    with pytest.raises(UserError, match="not found"):
        harness.resolve_targets([str(tmp_path / "nope")])
    with pytest.raises(UserError, match="no artifact matches"):
        harness.resolve_targets([str(tmp_path / "zz*")])


@pytest.mark.parametrize("damage", ["tamper", "truncate"])
def test_damaged_model_file_is_refused(artifact, damage):
    model = artifact / "model.onnx"
    data = model.read_bytes()
    if damage == "tamper":
        model.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        model.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="model.onnx"):
        harness.resolve_targets([str(artifact)])


def test_plan_rejects_too_long_sequence_and_missing_provider(artifact):
    targets = harness.resolve_targets([str(artifact)])
    settings = harness.BenchSettings(sequence_lengths=(MAX_POSITIONS + 1,), **FAST)
    with pytest.raises(UserError, match="positions"):
        harness.run_bench(targets, settings, runner=_never_called)
    settings = harness.BenchSettings(providers=("cuda",), **FAST)
    with pytest.raises(UserError, match="not available"):
        harness.run_bench(targets, settings, runner=_never_called)


def _never_called(spec, timeout):
    raise AssertionError("nothing may be measured after a planning error")


def test_worker_turns_a_shape_the_model_cannot_take_into_a_user_error(tiny_onnx):
    (target,) = harness.resolve_targets([str(tiny_onnx)])
    target.max_positions = None  # as if unknown: the worker must detect it from the error
    cell = harness.Cell(target, "cpu", 1, MAX_POSITIONS + 8)
    spec = harness.worker_spec(cell, harness.BenchSettings(**FAST).validated(), None)
    with pytest.raises(UserError, match="cannot take this shape"):
        harness.run_worker(spec)


class RecordingRunner:
    """Stands in for the worker: returns scripted samples and records the call order."""

    def __init__(self, p50_by_variant_round, bare_ms=1.0):
        self.table = p50_by_variant_round
        self.bare_ms = bare_ms  # the host's bare loop: a constant (quiet) or a list per call
        self.calls = []

    def __call__(self, spec, timeout):
        if spec.get("kind") == "bare":
            bare = sum(1 for c in self.calls if c == "bare")
            self.calls.append("bare")
            ms = self.bare_ms if np.isscalar(self.bare_ms) else self.bare_ms[bare]
            return {"ok": True, "samples_s": [ms / 1000] * 5}
        key = spec["variant"]
        r = sum(1 for c in self.calls if c == key)
        self.calls.append(key)
        ms = self.table[key][r]
        return {
            "ok": True,
            "samples_s": [ms / 1000] * 5,
            "session_create_ms": 10.0 + r,
            "memory_mb": {"peak_rss": 100.0 + r, "rss_growth": 20.0, "peak_device": None},
            "providers": ["CPUExecutionProvider"],
            "mean_sequence": float(spec["sequence"]),
        }


def test_rounds_are_interleaved_and_noise_is_flagged(tmp_path, tiny_onnx):
    a = make_artifact(tmp_path / "m" / "a", tiny_onnx, name="m", variant="a")
    b = make_artifact(tmp_path / "m" / "b", tiny_onnx, name="m", variant="b")
    runner = RecordingRunner({"a": [10.0, 10.5, 10.2], "b": [5.0, 9.0, 5.0]})
    settings = harness.BenchSettings(
        batch_sizes=(2,), sequence_lengths=(16,), noise_retries=0, **{**FAST, "rounds": 3}
    )
    doc = harness.run_bench(harness.resolve_targets([str(a), str(b)]), settings, runner=runner)
    # Two settling runs of the bare loop, then each round ends with one.
    assert runner.calls == ["bare", "bare"] + ["a", "b", "bare"] * 3
    assert doc["schema"] == "asc-deploy.bench/1"
    assert len(doc["rounds"]) == 3 and all(len(r["load_before"]) == 3 for r in doc["rounds"])
    ma, mb = doc["measurements"]
    assert ma["round_p50_ms"] == [10.0, 10.5, 10.2] and ma["round_p50_median_ms"] == 10.2
    assert ma["iterations"] == 15
    assert ma["throughput_per_s"] == pytest.approx(2 / 0.0102333, rel=1e-3)
    assert ma["memory_mb"]["peak_rss"] == 102.0 and ma["session_create_ms"] == 11.0
    assert not ma["noisy"] and ma["round_spread"] == pytest.approx(0.5 / 10.2, abs=1e-4)
    assert mb["noisy"] and mb["round_spread"] == pytest.approx(0.8)
    assert any("m/b" in f and "80%" in f for f in doc["flags"])
    assert ma["verified"] and ma["flops_per_example"] > 0 and ma["parameters"] > 0
    assert set(doc["settings"]) >= {"intra_op_threads", "inter_op_threads", "config_hash", "inputs"}


def _two_cells(tmp_path, tiny_onnx, a_ms, b_ms, bare_ms=1.0, **settings):
    a = make_artifact(tmp_path / "m" / "a", tiny_onnx, name="m", variant="a")
    b = make_artifact(tmp_path / "m" / "b", tiny_onnx, name="m", variant="b")
    runner = RecordingRunner({"a": a_ms, "b": b_ms}, bare_ms)
    settings = harness.BenchSettings(
        batch_sizes=(2,), sequence_lengths=(16,), **{**FAST, "rounds": 3, **settings}
    )
    doc = harness.run_bench(harness.resolve_targets([str(a), str(b)]), settings, runner=runner)
    return doc, runner.calls


def test_a_noisy_cell_is_measured_again_and_keeps_the_latest_rounds(tmp_path, tiny_onnx):
    doc, calls = _two_cells(tmp_path, tiny_onnx, [10.0] * 3, [5.0, 9.0, 5.0, 5.0, 5.0])
    # Only b is measured again, twice: [9, 5, 5] still spreads, [5, 5, 5] does not.
    assert calls[-2:] == ["b", "b"] and calls.count("a") == 3
    a, b = doc["measurements"]
    assert (a["remeasured"], b["remeasured"]) == (0, 2)
    assert b["round_p50_ms"] == [5.0, 5.0, 5.0] and not b["noisy"]
    assert not any("m/b" in f for f in doc["flags"])
    assert [r["round"] for r in doc["rounds"]] == [1, 2, 3, 4, 5]


def test_a_cell_still_noisy_after_its_retries_stays_flagged(tmp_path, tiny_onnx):
    doc, calls = _two_cells(tmp_path, tiny_onnx, [10.0] * 3, [5.0, 9.0, 5.0, 9.0, 5.0])
    b = doc["measurements"][1]
    assert b["noisy"] and b["remeasured"] == 2 and b["round_p50_ms"] == [5.0, 9.0, 5.0]
    assert any("m/b" in f and "re-measured 2x" in f for f in doc["flags"])


def test_the_bare_loop_sets_the_threshold_and_catches_a_busy_host(tmp_path, tiny_onnx):
    spread_12 = [10.0, 11.2, 10.0]  # 12%: noisy against the 10% minimum
    # Quiet bare loop: the 10% minimum stands and the 12% cell is noisy.
    doc, _ = _two_cells(tmp_path / "q", tiny_onnx, [10.0] * 3, spread_12, noise_retries=0)
    assert doc["noise"]["threshold"] == 0.10 and doc["measurements"][1]["noisy"]
    # A host whose bare loop itself spreads 7% tolerates twice that in a cell.
    bare = [1.0, 1.0, 1.0, 1.07, 1.0]  # two settling runs, then one per round
    doc, _ = _two_cells(tmp_path / "n", tiny_onnx, [10.0] * 3, spread_12, bare, noise_retries=0)
    assert doc["noise"]["floor"] == pytest.approx(0.07) and doc["noise"]["threshold"] == 0.14
    assert not doc["measurements"][1]["noisy"] and not doc["noise"]["host_busy"]
    # A bare loop spreading 20% (as this project's idle VM can): a 35% cell is within the host's
    # own noise, and the host is not busy.
    bare = [1.0, 1.0, 1.0, 1.2, 1.0]
    spread_35 = [10.0, 13.5, 10.0]
    doc, _ = _two_cells(tmp_path / "v", tiny_onnx, [10.0] * 3, spread_35, bare, noise_retries=0)
    assert doc["noise"]["threshold"] == 0.40 and not doc["noise"]["host_busy"]
    assert not doc["measurements"][1]["noisy"]
    # A bare loop spreading 50% is a busy host, whatever the cells show.
    bare = [1.0, 1.0, 1.0, 1.5, 1.0]
    doc, _ = _two_cells(tmp_path / "b", tiny_onnx, [10.0] * 3, [10.0] * 3, bare, noise_retries=0)
    assert doc["noise"]["host_busy"] and doc["noise"]["threshold"] == 1.0
    assert any("bare session.run loop spread 50% across rounds (> 30%)" in f for f in doc["flags"])


def test_settling_waits_for_two_agreeing_bare_runs_and_gives_up_after_a_bound(tmp_path, tiny_onnx):
    bare = [2.0, 1.5, 1.2, 1.0, 1.02] + [1.0] * 3
    doc, calls = _two_cells(tmp_path / "s", tiny_onnx, [10.0] * 3, [10.0] * 3, bare)
    assert doc["noise"]["settle"] == {
        "runs": 5,
        "p50_ms": [2.0, 1.5, 1.2, 1.0, 1.02],
        "settled": True,
    }
    assert calls[:6] == ["bare"] * 5 + ["a"]
    never = [1.0, 2.0] * 4 + [1.0] * 3
    doc, _ = _two_cells(tmp_path / "n", tiny_onnx, [10.0] * 3, [10.0] * 3, never)
    assert doc["noise"]["settle"]["runs"] == noise.SETTLE_RUNS
    assert not doc["noise"]["settle"]["settled"]


def test_end_to_end_in_fresh_workers_with_real_inputs(artifact):
    settings = harness.BenchSettings(
        batch_sizes=(1, 4), sequence_lengths=(16,), inputs="real", **FAST
    )
    doc = harness.run_bench(harness.resolve_targets([str(artifact)]), settings)
    assert [(m["batch"], m["inputs"]) for m in doc["measurements"]] == [(1, "real"), (4, "real")]
    samples = np.load(artifact / "sample_inputs.npz")
    lengths = np.minimum(samples["lengths"], 16)
    for m in doc["measurements"]:
        assert m["iterations"] >= 2 * 5 and len(m["round_p50_ms"]) == 2
        assert 0 < m["latency_ms"]["min"] <= m["latency_ms"]["p50"] <= m["latency_ms"]["p99"]
        assert m["providers_in_use"][0] == "CPUExecutionProvider"
        assert m["memory_mb"]["peak_rss"] > m["memory_mb"]["rss_growth"] > 0
    # Batch 1 pads nothing: the mean length is the samples' mean (capped at 16).
    assert doc["measurements"][0]["mean_sequence"] == pytest.approx(lengths.mean())
    assert doc["measurements"][1]["mean_sequence"] > lengths.mean()  # padded to each batch's max


def test_real_inputs_need_sample_file(artifact, tiny_onnx):
    settings = harness.BenchSettings(inputs="real", **FAST)
    with pytest.raises(UserError, match="--inputs real needs sample_inputs.npz"):
        harness.run_bench(harness.resolve_targets([str(tiny_onnx)]), settings, runner=_never_called)
    (artifact / "sample_inputs.npz").unlink()
    # The manifest lists the sample file, so verification already refuses the folder.
    with pytest.raises(UserError, match="sample_inputs.npz"):
        harness.resolve_targets([str(artifact)])


def test_merge_keeps_runs_per_host_and_drops_duplicates(tmp_path, tiny_onnx):
    runner = RecordingRunner({tiny_onnx.stem: [1.0, 1.0]})
    settings = harness.BenchSettings(batch_sizes=(1,), sequence_lengths=(8,), **FAST)
    doc = harness.run_bench(harness.resolve_targets([str(tiny_onnx)]), settings, runner=runner)
    other = {
        **doc,
        "host": {**doc["host"], "fingerprint": "0000000000000000", "hostname": "gpu-box"},
    }
    for name, d in (("a", doc), ("b", other)):
        harness.write_bench(d, tmp_path / f"{name}.json")
    merged = harness.merge_bench([harness.load_bench(tmp_path / f"{n}.json") for n in "aba"])
    assert merged["schema"] == "asc-deploy.bench-set/1"
    assert len(merged["runs"]) == 2 and merged["runs"][0]["host"]["hostname"] == "gpu-box"
    assert set(merged["hosts"]) == {doc["host"]["fingerprint"], "0000000000000000"}
    harness.write_bench(merged, tmp_path / "m.json")
    again = harness.merge_bench([harness.load_bench(tmp_path / "m.json"), doc])
    assert len(again["runs"]) == 2
    shutil.copy(tmp_path / "a.json", tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('{"schema": "other/9"}')
    with pytest.raises(UserError, match="unknown schema"):
        harness.load_bench(tmp_path / "bad.json")
