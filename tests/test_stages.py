"""Declared stages: the cache key holds exactly what a stage reads, settings are checked at the
door, and provider names are canonical everywhere past it.

Regression tests for the defects of issue 9 (each failed on commit ab31934):
1. a new `asc.thresholds` / `asc.epsilon` on a finished run (KeyError / stale selections);
2. `bench.providers: [CPUExecutionProvider]` stored as written (no speedup reference);
3. `bench.batch_sizes: [0]`, `rounds: 0`, `providers: [gpu0]` failing only at the bench stage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pipeline_helpers import cli, run_config
from pydantic import BaseModel

from asc_deploy.config import BenchConfig, GatesConfig, RunConfig, load_run_config
from asc_deploy.errors import UserError
from asc_deploy.stages import compress
from asc_deploy.stages.core import Context, Settings, StageStore, stage


class Count(BaseModel):
    value: int


calls: list[dict] = []


@stage("count", reads=("asc.epsilon",), record=Count)
def _count(s: Settings, ctx: Context, n: int) -> Count:
    calls.append({"epsilon": s["asc.epsilon"], "n": n})
    return Count(value=n)


@stage("sneaky", reads=("asc.epsilon",), record=Count)
def _sneaky(s: Settings, ctx: Context) -> Count:
    return Count(value=int(s["asc.thresholds"][0]))  # not declared: must fail


def _cfg(**asc) -> RunConfig:
    return RunConfig(model="m", task={"preset": "sst2"}, asc=asc)


def test_stage_reruns_when_a_declared_setting_or_input_changes_and_only_then(tmp_path):
    store = StageStore(Context(tmp_path))
    calls.clear()
    assert store.run(_count, _cfg(epsilon=0.01), n=3).value == 3
    store.run(_count, _cfg(epsilon=0.01, thresholds=[0.5]), n=3)  # undeclared: reused
    assert len(calls) == 1
    store.run(_count, _cfg(epsilon=0.02), n=3)  # declared setting changed
    store.run(_count, _cfg(epsilon=0.02), n=4)  # input changed
    assert calls == [
        {"epsilon": 0.01, "n": 3},
        {"epsilon": 0.02, "n": 3},
        {"epsilon": 0.02, "n": 4},
    ]
    StageStore(Context(tmp_path, frozenset({"count"}))).run(_count, _cfg(epsilon=0.02), n=4)
    assert len(calls) == 4  # forced


def test_a_stage_cannot_read_a_setting_it_did_not_declare(tmp_path):
    with pytest.raises(KeyError, match="asc.thresholds"):
        StageStore(Context(tmp_path)).run(_sneaky, _cfg())


def test_new_threshold_or_epsilon_reselects_without_profiling_again(pipeline_workspace, tmp_path):
    """Defect 1: selections follow asc.thresholds / asc.epsilon; the matrix is reused."""
    from asc_deploy.tasks.presets import build_task

    raw = yaml.safe_load(run_config(pipeline_workspace, "stages").read_text())
    raw["comparisons"] = {"strategies": ["top"]}
    cfg = RunConfig.model_validate(raw)
    task = build_task(cfg.task)
    store = StageStore(Context(tmp_path))
    base = compress.model_folder(cfg.model)

    def select(**asc):
        changed = cfg.model_copy(update={"asc": cfg.asc.model_copy(update=asc)})
        profile = store.run(compress.profile, changed, model=base, task=task)
        return profile, store.run(
            compress.select_candidates, changed, profile=profile, model=base, task=task
        )

    profile, first = select()
    record = tmp_path / "stages" / "profile.json"
    written = record.stat().st_mtime_ns
    _, second = select(thresholds=[0.9, 0.2, 0.75])
    assert set(second.selections) == {"0.9", "0.2", "0.75"}
    assert record.stat().st_mtime_ns == written  # the matrix was not computed again
    # A huge epsilon lets chains through removed states: the selection must change with it.
    _, third = select(epsilon=0.5)
    from asc_deploy.compress.asc import selections_for_thresholds

    expected = selections_for_thresholds(
        __import__("numpy").asarray(profile.matrix), cfg.asc.thresholds, 0.5
    )
    assert third.selections == {str(t): v for t, v in expected.items()}
    assert first.selections == {
        str(t): v
        for t, v in selections_for_thresholds(
            __import__("numpy").asarray(profile.matrix), cfg.asc.thresholds, cfg.asc.epsilon
        ).items()
    }


@pytest.mark.parametrize("spelling", ["cpu", "CPU", "CPUExecutionProvider", "cpuexecutionprovider"])
def test_every_provider_spelling_becomes_one_canonical_name(spelling):
    """Defect 2: the speedup column and gate match measurements by this one name."""
    from asc_deploy.measure.harness import BenchSettings

    assert BenchConfig(providers=[spelling]).providers == ["cpu"]
    assert GatesConfig(speedup_target=spelling).speedup_target == "cpu"
    assert BenchSettings(providers=(spelling,)).validated().providers == ("cpu",)
    assert BenchConfig(providers=["trt", "TensorrtExecutionProvider"]).providers == ["tensorrt"]


def test_bench_cli_provider_typo_is_named():
    from asc_deploy.measure.harness import BenchSettings

    with pytest.raises(UserError, match="unknown execution provider 'cpuu'"):
        BenchSettings(providers=("cpuu",)).validated()


@pytest.mark.parametrize(
    ("bench", "key"),
    [
        ({"batch_sizes": [0]}, "bench.batch_sizes"),
        ({"rounds": 0}, "bench.rounds"),
        ({"providers": ["gpu0"]}, "bench.providers"),
        ({"sequence_lengths": []}, "bench.sequence_lengths"),
        ({"warmup": -1}, "bench.warmup"),
    ],
)
def test_bad_bench_settings_fail_at_the_door(pipeline_workspace, tmp_path, bench, key):
    """Defect 3: one error line naming the key, exit 2, before any stage runs."""
    raw = yaml.safe_load(run_config(pipeline_workspace, "door").read_text())
    raw["bench"].update(bench)
    raw["output_dir"] = str(tmp_path / "exports")
    path = tmp_path / "door.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        load_run_config(path)
    result = cli("run", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and key in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "exports").exists()


def test_a_provider_this_host_lacks_fails_before_training(pipeline_workspace, tmp_path):
    raw = yaml.safe_load(run_config(pipeline_workspace, "nocuda").read_text())
    raw["bench"]["providers"] = ["cpu", "cuda"]
    raw["output_dir"] = str(tmp_path / "exports")
    path = tmp_path / "nocuda.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = cli("run", str(path))
    assert result.returncode == 2, result.stderr
    assert "bench.providers" in result.stderr and "cuda" in result.stderr
    assert not (tmp_path / "exports" / "nocuda" / "stages").exists()


def test_a_gate_shape_the_bench_never_measures_is_refused(pipeline_workspace):
    raw = yaml.safe_load(run_config(pipeline_workspace, "shape").read_text())
    raw["gates"].update(speedup_shape=[8, 128], min_speedup=1.5)
    with pytest.raises(ValueError, match="speedup_shape 8x128 is not measured"):
        RunConfig.model_validate(raw)


def test_missing_data_or_model_fails_before_any_stage(pipeline_workspace, tmp_path):
    from asc_deploy.preflight import check_run

    raw = yaml.safe_load(run_config(pipeline_workspace, "pre").read_text())
    cfg = RunConfig.model_validate({**raw, "model": str(tmp_path / "nothing")})
    with pytest.raises(UserError, match="model:.*not a model folder"):
        check_run(cfg)
    cfg = RunConfig.model_validate(
        {**raw, "task": {**raw["task"], "data_dir": str(tmp_path / "nodata")}}
    )
    with pytest.raises(UserError):
        check_run(cfg)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = RunConfig.model_validate({**raw, "output_dir": str(blocker / "exports")})
    with pytest.raises(UserError, match="output_dir"):
        check_run(cfg)


def test_task_identity_is_the_data_content_not_its_path(pipeline_workspace, tmp_path):
    """The same data in another folder keys the same: a run from elsewhere reuses its stages."""
    import shutil

    from asc_deploy.stages.core import identity
    from asc_deploy.tasks.presets import build_task

    shutil.copytree(pipeline_workspace / "data", tmp_path / "data")
    here = build_task(load_run_config(run_config(pipeline_workspace, "a")).task)
    raw = yaml.safe_load(run_config(pipeline_workspace, "b").read_text())
    raw["task"]["data_dir"] = str(Path(tmp_path / "data"))
    there = build_task(RunConfig.model_validate(raw).task)
    assert identity(here) == identity(there)


def test_export_verb_and_run_export_the_same_way(full_run, pipeline_workspace, tmp_path):
    """Defect 4: `asc-deploy export --config` validates on the same examples and keeps the
    same sample inputs as the run's export stage (one path for one action)."""
    import json

    import numpy as np

    from asc_deploy.deploy.artifacts import load_sample_inputs

    root, _ = full_run
    dest = tmp_path / "fp32"
    result = cli(
        "export", str(pipeline_workspace / "model"), "--config",
        str(pipeline_workspace / "full.yaml"), "-o", str(dest), "--name", "uncompressed",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    run_artifact = root / "artifacts" / "uncompressed" / "fp32"
    ours, theirs = (json.loads((d / "manifest.json").read_text()) for d in (dest, run_artifact))
    assert ours["validation"] == theirs["validation"]
    assert ours["sample_inputs"] == theirs["sample_inputs"]
    assert ours["inputs_hash"] == theirs["inputs_hash"]
    a, b = load_sample_inputs(dest), load_sample_inputs(run_artifact)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_second_run_on_the_same_output_folder_is_refused(pipeline_workspace, tmp_path):
    from asc_deploy.fsutil import exclusive_folder

    raw = yaml.safe_load(run_config(pipeline_workspace, "twice").read_text())
    raw["output_dir"] = str(tmp_path / "exports")
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(raw))
    with exclusive_folder(tmp_path / "exports" / "twice"):
        result = cli("run", str(path))
    assert result.returncode == 2 and "another asc-deploy run" in result.stderr
    assert not (tmp_path / "exports" / "twice" / "stages").exists()


@pytest.mark.parametrize(
    ("section", "key"), [("asc", "remove_layers"), ("comparisons", "layer_counts")]
)
def test_a_depth_the_model_does_not_have_fails_before_training(pipeline_workspace, section, key):
    from asc_deploy.preflight import check_run

    raw = yaml.safe_load(run_config(pipeline_workspace, "deep").read_text())
    raw.setdefault(section, {})[key] = [4]  # the tiny model has 4 layers
    with pytest.raises(UserError, match=f"{section}.{key}: 4 layers cannot be removed"):
        check_run(RunConfig.model_validate(raw))
