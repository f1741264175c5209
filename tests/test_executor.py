"""The executor behind the stages, without a cluster: the local executor keeps today's order and
records, `gather` records finished work before raising, the executor config is checked at the
door, a node checks the content hashes of what it picks up, and asking for Ray where it is not
installed is one line. The cluster itself is tests/test_executor_ray.py."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from deploy_helpers import run_cli
from pydantic import BaseModel, ValidationError

from asc_deploy.config import ExecutorConfig, RunConfig
from asc_deploy.errors import UserError
from asc_deploy.executors.pickup import (
    check_inputs,
    probe_node,
    resolve_stage,
    run_stage_task,
    stage_address,
)
from asc_deploy.records import ModelFolder
from asc_deploy.stages import compress, measure
from asc_deploy.stages.core import (
    Context,
    LocalExecutor,
    Pending,
    Settings,
    StageStore,
    gather,
    identity,
    stage,
)


class Count(BaseModel):
    value: int


order: list[int] = []


@stage("count", reads=("asc.epsilon",), record=Count)
def count_stage(s: Settings, ctx: Context, n: int) -> Count:
    order.append(n)
    if n < 0:
        raise UserError(f"negative {n}")
    return Count(value=n)


def _cfg(**fields) -> RunConfig:
    return RunConfig(model="m", task={"preset": "sst2"}, **fields)


def test_local_executor_is_the_default_and_computes_in_order_when_asked(tmp_path):
    store = StageStore(Context(tmp_path))
    assert isinstance(store.executor, LocalExecutor)
    order.clear()
    jobs = [store.submit(count_stage, _cfg(), str(n), n=n) for n in (3, 1, 2)]
    assert order == []  # nothing runs before its record is asked for: a plain loop's order
    assert [r.value for r in gather(jobs)] == [3, 1, 2] and order == [3, 1, 2]
    record = json.loads((tmp_path / "stages" / "count-3.json").read_text())
    # Local records carry no ran_on; every record says how long its work took, and when it ended.
    assert set(record) == {"key", "stage", "inputs", "result", "seconds", "finished"}
    assert record["seconds"] >= 0 and record["finished"].endswith("Z")
    order.clear()
    assert store.run(count_stage, _cfg(), "3", n=3).value == 3 and order == []  # recorded


def test_gather_records_what_finished_and_starts_nothing_after_a_failure(tmp_path):
    store = StageStore(Context(tmp_path))
    order.clear()
    jobs = [store.submit(count_stage, _cfg(), str(n), n=n) for n in (1, -1, 2)]
    with pytest.raises(UserError, match="negative -1"):
        gather(jobs)
    assert order == [1, -1]  # local work not begun is not begun after the failure
    assert (tmp_path / "stages" / "count-1.json").is_file()
    assert not (tmp_path / "stages" / "count--1.json").exists()


def test_gather_waits_for_work_in_flight_before_raising():
    settled = []

    def fail():
        raise RuntimeError("lost")

    def finish():
        settled.append("in flight")
        return 7

    jobs = [Pending(fail, in_flight=True), Pending(finish, in_flight=True), Pending(finish)]
    with pytest.raises(RuntimeError, match="lost"):
        gather(jobs)
    assert settled == ["in flight"]  # the running one settled (and would be recorded)


def test_executor_config_defaults_and_door_checks():
    assert _cfg().executor == ExecutorConfig(kind="local", address="auto")
    cfg = _cfg(executor={"kind": "ray", "address": "10.0.0.5:6379", "targets": ["target:a"]})
    assert cfg.executor.targets == ["target:a"]
    bad = [
        ({"kind": "ray", "address": "ray://head:10001"}, "Ray Client"),
        ({"kind": "ray", "address": "head"}, "HOST:PORT"),
        ({"kind": "ray", "address": "head:99999"}, "HOST:PORT"),
        ({"kind": "ray", "resources": {"train": {"num_cpus": 1}}}, "unknown stage 'train'"),
        ({"kind": "ray", "resources": {"finetune": {"num_gpus": -1}}}, "greater than or equal"),
        ({"kind": "ray", "targets": ["CPU"]}, "not a custom resource"),
        ({"kind": "dask"}, "'local' or 'ray'"),
        ({"kind": "ray", "max_retry": 2}, "Extra inputs"),
    ]
    for executor, message in bad:
        with pytest.raises(ValidationError, match=message):
            _cfg(executor=executor)


def _tiny_run_config(tmp_path: Path, executor: dict | None = None) -> Path:
    import yaml
    from conftest import tiny_config

    tiny_config("bert").save_pretrained(tmp_path / "model")
    (tmp_path / "data").mkdir()
    rows = "".join(f"a {'good' if i % 2 else 'bad'} film\t{i % 2}\n" for i in range(8))
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "data" / name).write_text("sentence\tlabel\n" + rows)
    doc = {
        "name": "r",
        "output_dir": str(tmp_path / "out"),
        "model": str(tmp_path / "model"),
        "model_finetuned": True,
        "task": {"preset": "sst2", "data_dir": str(tmp_path / "data")},
    }
    if executor:
        doc["executor"] = executor
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_run_refuses_an_unknown_executor_in_one_line(tmp_path, monkeypatch, capsys):
    config = _tiny_run_config(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "run", config, "--executor", "dask")
    assert code == 2 and err.strip() == "error: --executor dask: unknown executor; use local or ray"


def test_ray_not_installed_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    config = _tiny_run_config(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "run", config, "--executor", "ray")
    assert code == 2
    assert err.strip().splitlines() == [
        'error: executor.kind ray needs Ray on this machine: pip install "asc-deploy[ray]"'
    ]
    assert not (tmp_path / "out" / "r" / "stages").exists()


def test_core_path_does_not_import_ray(tmp_path):
    import subprocess

    code = (
        "import sys, asc_deploy.pipeline, asc_deploy.executors, asc_deploy.preflight;"
        "import asc_deploy.executors.pickup, asc_deploy.cli;"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_stage_is_sent_by_name_and_resolved_on_the_node():
    for declared in (compress.finetune_base, compress.recover, measure.evaluate, measure.bench):
        assert resolve_stage(stage_address(declared)) is declared
    assert stage_address(count_stage) == (__name__, "count_stage")


def _folder(tmp_path: Path) -> ModelFolder:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    return compress.model_folder(folder)


def test_a_node_refuses_an_input_whose_content_changed(tmp_path):
    model = _folder(tmp_path)
    inputs = {"model": model, "source": Path(model.path)}
    identities = {name: identity(value) for name, value in inputs.items()}
    check_inputs("evaluate m-torch", inputs, identities)  # same bytes: picked up
    (Path(model.path) / "model.safetensors").write_bytes(b"other weights")  # a stale mount
    with pytest.raises(UserError, match="input 'model' of evaluate m-torch.*same files"):
        check_inputs("evaluate m-torch", {"model": model}, {"model": identities["model"]})
    with pytest.raises(UserError, match="input 'source' of evaluate m-torch is not the content"):
        check_inputs("evaluate m-torch", {"source": inputs["source"]}, identities)


def test_a_node_refuses_a_missing_input_folder(tmp_path):
    model = _folder(tmp_path)
    gone = model.model_copy(update={"path": str(tmp_path / "elsewhere")})
    with pytest.raises(UserError, match="does not exist here"):
        check_inputs("recover x", {"teacher": gone}, {"teacher": identity(gone)})


def test_a_node_verifies_every_artifact_file_it_picks_up(tmp_path):
    from asc_deploy.fsutil import sha256_file, write_json_atomic

    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.onnx").write_bytes(b"graph")
    files = {"model.onnx": {"size": 5, "sha256": sha256_file(artifact / "model.onnx")}}
    write_json_atomic(
        artifact / "manifest.json", {"schema": "asc-deploy.artifact/1", "files": files}
    )
    identities = {"artifacts": identity([artifact])}
    check_inputs("bench", {"artifacts": [artifact]}, identities)
    (artifact / "model.onnx").write_bytes(b"GRAPH")  # same size, other bytes: manifest unchanged
    with pytest.raises(UserError, match="does not match its sha256"):
        check_inputs("bench", {"artifacts": [artifact]}, identities)


def test_stage_task_runs_in_the_drivers_folder_and_says_where(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = run_stage_task(
        stage_address(count_stage), "count 5", {"asc.epsilon": 0.01}, Context(Path("run")),
        {"n": 5}, {"n": 5}, str(tmp_path), None,
    )  # fmt: skip
    assert done["result"] == {"value": 5}
    assert done["ran_on"]["pid"] > 0 and done["ran_on"]["seconds"] >= 0
    with pytest.raises(UserError, match="does not exist here"):
        run_stage_task(
            stage_address(count_stage), "count 5", {"asc.epsilon": 0.01}, Context(Path("run")),
            {"n": 5}, {"n": 5}, str(tmp_path / "not-here"), None,
        )  # fmt: skip


def test_storage_probe_reports_what_a_node_does_not_see(tmp_path):
    from asc_deploy.fsutil import write_json_atomic

    probe = tmp_path / ".probe"
    write_json_atomic(probe, "token")
    assert probe_node(str(probe), "token", [str(tmp_path)]) is None
    assert "another file" in probe_node(str(probe), "other", [])
    assert "not shared" in probe_node(str(tmp_path / "none"), "token", [])
    assert probe_node(str(probe), "token", ["/no/such/data"]) == "does not see /no/such/data"


def _nodes(*specs: tuple[str, dict]) -> list[dict]:
    return [{"NodeID": node, "Alive": True, "Resources": res} for node, res in specs]


def test_targets_sharing_a_node_are_measured_one_after_another(monkeypatch):
    from asc_deploy.executors import ray_executor

    nodes = _nodes(
        ("n1", {"CPU": 8.0, "target:avx512": 1.0, "target:cuda": 1.0}),
        ("n2", {"CPU": 4.0, "target:arm64": 1.0}),
        ("n3", {"CPU": 2.0, "target:avx2": 1.0}),
    )
    monkeypatch.setattr(ray_executor, "alive_nodes", lambda: nodes)
    executor = object.__new__(ray_executor.RayExecutor)  # no cluster needed for the plan
    executor.config = ExecutorConfig(kind="ray")
    waves = executor.bench_waves(["target:avx512", "target:cuda", "target:arm64", "target:avx2"])
    assert waves == [["target:avx512", "target:arm64", "target:avx2"], ["target:cuda"]]


def test_requests_per_stage_and_a_bench_takes_its_whole_node(monkeypatch, tmp_path):
    from asc_deploy.executors import ray_executor
    from asc_deploy.stages.core import StageCall

    nodes = _nodes(("n1", {"CPU": 8.0, "GPU": 1.0}), ("n2", {"CPU": 6.0, "target:t": 1.0}))
    monkeypatch.setattr(ray_executor, "alive_nodes", lambda: nodes)
    executor = object.__new__(ray_executor.RayExecutor)
    executor.config = ExecutorConfig(
        kind="ray", resources={"recover": {"num_cpus": 4, "num_gpus": 1, "memory_gb": 2}}
    )
    context = Context(tmp_path)

    def options(declared, target=None):
        call = StageCall(declared, Settings({}), context, {}, {}, "x", target)
        return executor._options(call)

    recover = options(compress.recover)
    assert (recover["num_cpus"], recover["num_gpus"], recover["memory"]) == (4, 1, 2 * 2**30)
    assert recover["max_retries"] == 3 and recover["retry_exceptions"] is False
    assert options(measure.evaluate)["num_cpus"] == 1.0  # unnamed: one CPU
    bench = options(measure.bench, "target:t")
    assert bench["resources"] == {"target:t": 1} and bench["num_cpus"] == 6.0  # the whole node


def test_preflight_refuses_what_the_cluster_cannot_give(monkeypatch):
    from asc_deploy.executors import ray_executor

    nodes = _nodes(("n1", {"CPU": 2.0, "memory": 8 * 2**30, "target:cpu": 1.0}))
    ok = ExecutorConfig(kind="ray", targets=["target:cpu"], resources={"export": {"num_cpus": 2}})
    ray_executor._check_targets(ok, nodes)
    ray_executor._check_requests(ok, nodes)
    with pytest.raises(UserError, match=r"no node of the Ray cluster has the resource 'target:x' "
                       r"\(custom resources there: target:cpu\)"):  # fmt: skip
        ray_executor._check_targets(ExecutorConfig(kind="ray", targets=["target:x"]), nodes)
    for request, words in (
        ({"finetune": {"num_gpus": 1}}, "finetune: asks for 1 CPU + 1 GPU"),
        ({"evaluate": {"memory_gb": 64}}, "evaluate: asks for 1 CPU + 64 GB"),
        ({"recover": {"num_cpus": 3}}, "recover: asks for 3 CPU"),
    ):
        with pytest.raises(UserError, match=re.escape(f"executor.resources.{words}, which no")):
            ray_executor._check_requests(ExecutorConfig(kind="ray", resources=request), nodes)
