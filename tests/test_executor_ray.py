"""The Ray executor on a real cluster on this machine: a head on 127.0.0.1 and a second node
process holding the custom resource `target:test`, both started with `ray start` like any
cluster. Skipped where Ray is not installed (`pip install "asc-deploy[ray]"`).

Shown here: the tiny run through the cluster gives the same selections and accuracies as the
local run, its stages ran on both nodes and its bench on the node holding the target; records
resume across executors and a recorded stage is never submitted again; an unreachable address
or a target no node has is one `error:` line before any work; killing the worker node while it
recovers a model, the run completes (Ray reruns the task on the head) with nothing lost or
duplicated.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import make_workspace, tiny_config

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
TARGET = "target:test"
# A throwaway cluster: no usage reports, and no token even where ~/.ray/auth_token exists.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    address: str
    head: subprocess.Popen
    worker: subprocess.Popen
    worker_node: str  # Ray node id of the node holding TARGET
    head_node: str

    def kill_worker_node(self) -> None:
        """SIGKILL the worker node's whole process group: raylet, agents and its workers."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(30)

    def on_worker_node(self, pid: int) -> bool:
        try:
            return os.getsid(pid) == self.worker.pid
        except ProcessLookupError:
            return False


def _ray_start(*args: str, env: dict, log: Path) -> subprocess.Popen:
    # Its own session: the node's processes are one group, stopped by id, never by name.
    with log.open("w") as out:
        return subprocess.Popen(
            [str(RAY), "start", "--block", "--node-ip-address=127.0.0.1", "--num-gpus=0",
             "--object-store-memory=150000000", "--disable-usage-stats", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _nodes(address: str) -> list[dict]:
    code = (
        f"import json, ray; ray.init(address={address!r}, logging_level='ERROR');"
        "print(json.dumps([n for n in ray.nodes() if n['Alive']]))"
    )
    env = {**os.environ, **RAY_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    if out.returncode:  # the head is not serving yet
        return []
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the node's process group, then SIGKILL whatever of it is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(20)
        time.sleep(2)


@pytest.fixture(scope="module")
def cluster():
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a limit
    env = {**os.environ, **RAY_ENV}
    address = f"127.0.0.1:{port}"
    head = _ray_start("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                      f"--temp-dir={temp}", env=env, log=Path(temp) / "head.log")  # fmt: skip
    worker = None
    try:
        deadline = time.time() + 180
        while not _nodes(address):  # the head serves
            assert time.time() < deadline and head.poll() is None, (
                "the Ray head did not start: " + (Path(temp) / "head.log").read_text()[-2000:]
            )
            time.sleep(2)
        worker = _ray_start(f"--address={address}", "--num-cpus=1",
                            f"--resources={json.dumps({TARGET: 1})}", env=env,
                            log=Path(temp) / "worker.log")  # fmt: skip
        while len(nodes := _nodes(address)) < 2:
            assert time.time() < deadline and worker.poll() is None, (
                "the worker did not join: " + (Path(temp) / "worker.log").read_text()[-2000:]
            )
            time.sleep(2)
        holder = next(n["NodeID"] for n in nodes if TARGET in n["Resources"])
        other = next(n["NodeID"] for n in nodes if TARGET not in n["Resources"])
        yield Cluster(address, head, worker, holder, other)
    finally:
        if worker is not None:
            _stop(worker)
        _stop(head)
        subprocess.run(["rm", "-rf", temp], check=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return make_workspace(tmp_path_factory.mktemp("ray-run"), tiny_tokenizer_dir)


def _config(ws: Path, name: str, executor: dict | None = None, **changes) -> Path:
    """The tiny run with `top` only, ORT int8 of the reference and no PyTorch or LoadGen in the
    bench: fewer stages keep the cluster tests short."""
    config = tiny_config(ws, name)
    config["comparisons"] |= {"strategies": ["top"], "quantized_baselines": ["ort-dynamic-int8"]}
    del config["comparisons"]["random_seeds"]
    config["bench"] |= {"include_torch": False}
    del config["bench"]["scenarios"]
    config["gates"]["max_accuracy_drop"] = 100.0
    config.update(changes)
    if executor is not None:
        config["executor"] = executor
    path = ws / f"{name}-{(executor or {}).get('kind', 'local')}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from asc_deploy.cli import main; main()", "run", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **RAY_ENV}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def _results(ws: Path, name: str) -> dict:
    return json.loads((ws / "exports" / name / "report" / "results.json").read_text())


def _records(ws: Path, name: str) -> dict[str, dict]:
    folder = ws / "exports" / name / "stages"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _same_outcome(a: dict, b: dict) -> None:
    """Same layer choices, models and accuracies (every metric of every evaluation)."""
    assert a["similarity"]["selections"] == b["similarity"]["selections"]
    models = lambda r: {m["name"]: (m["removed_layers"], m["layers"]) for m in r["models"]}  # noqa: E731
    assert models(a) == models(b)
    metrics = lambda r: {(e["model"], e["variant"]): e["metrics"] for e in r["evaluations"]}  # noqa: E731
    assert metrics(a) == metrics(b) and len(metrics(a)) == len(a["evaluations"])


def _submitted(output: str) -> list[str]:
    # Anywhere in a line: Ray's forwarded worker output can leave a line unterminated, and the
    # driver's next line then lands after it.
    return re.findall(r"\[ray\] [^\n]*?: submitted", output)


@pytest.fixture(scope="module")
def local_run(workspace) -> dict:
    started = time.perf_counter()
    done = _run(str(_config(workspace, "local")))
    assert done.returncode == 0, done.stderr[-3000:]
    return {"seconds": time.perf_counter() - started, "results": _results(workspace, "local")}


def test_cluster_run_matches_local_and_benches_on_the_target_node(cluster, workspace, local_run):
    executor = {"kind": "ray", "address": cluster.address, "targets": [TARGET]}
    started = time.perf_counter()
    done = _run(str(_config(workspace, "cluster", executor)))
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"tiny run: local {local_run['seconds']:.0f} s, on the 2-node cluster {seconds:.0f} s")
    results = _results(workspace, "cluster")
    _same_outcome(results, local_run["results"])

    records = _records(workspace, "cluster")
    bench = records.pop("bench-target-test")
    assert bench["ran_on"]["node_id"] == cluster.worker_node and bench["ran_on"]["target"] == TARGET
    (run,) = results["bench"]
    assert run["host"]["ray_node_id"] == cluster.worker_node and run["host"]["ray_target"] == TARGET
    written = json.loads((workspace / "exports" / "cluster" / "bench.json").read_text())
    assert written["host"]["ray_node_id"] == cluster.worker_node
    assert {m["model"] for m in run["measurements"]} == {
        "uncompressed", "asc-0.90", "asc-0.20", "tiny-distilbert",
        "apc-h16-f32", "asc-0.90+apc-h16-f32", "top-1+apc-h16-f32",  # the width axis, on Ray too
    }  # fmt: skip
    # Every other stage ran as a task; the independent ones spread over both nodes.
    nodes = {record["ran_on"]["node_id"] for record in records.values()}
    assert nodes == {cluster.head_node, cluster.worker_node}
    assert len(_submitted(done.stderr)) == len(records) + 1  # each stage once, none twice


def test_records_resume_across_executors_and_are_never_resubmitted(cluster, workspace, local_run):
    ray_config = _config(
        workspace, "local", {"kind": "ray", "address": cluster.address, "targets": [TARGET]}
    )
    first = _run(str(ray_config))  # the local run's folder: only the target's bench is new
    assert first.returncode == 0, first.stderr[-3000:]
    assert [line.split(":")[0] for line in _submitted(first.stderr)] == ["[ray] bench target-test"]
    again = _run(str(ray_config))
    assert again.returncode == 0 and _submitted(again.stderr) == []
    back = _run(str(_config(workspace, "local")), "--executor", "local")
    assert back.returncode == 0 and "[stage]" not in back.stderr
    _same_outcome(_results(workspace, "local"), local_run["results"])


@pytest.mark.parametrize(
    "executor, message",
    [
        ({"address": "127.0.0.1:{closed}"}, "error: executor.address 127.0.0.1:{closed}: no Ray "
         "head answers there (Connection refused); start one with `ray start --head "
         "--port={closed}` or fix executor.address"),
        ({"targets": ["target:absent"]}, "error: executor.targets: no node of the Ray cluster "
         "has the resource 'target:absent' (custom resources there: target:test)"),
        ({"resources": {"recover": {"num_gpus": 1}}}, "error: executor.resources.recover: asks "
         "for 1 CPU + 1 GPU, which no node of the cluster has"),
    ],
)  # fmt: skip
def test_bad_cluster_input_is_one_line_before_any_work(cluster, workspace, executor, message):
    closed = str(_free_port())
    executor = {"kind": "ray", "address": cluster.address, **executor}
    executor["address"] = executor["address"].replace("{closed}", closed)
    name = f"bad-{len(message)}"
    started = time.perf_counter()
    done = _run(str(_config(workspace, name, executor)))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.replace("{closed}", closed)), lines
    assert not (workspace / "exports" / name / "stages").exists()
    assert time.perf_counter() - started < 120


def test_worker_node_killed_mid_recovery_the_run_completes_nothing_lost_or_duplicated(
    cluster, workspace
):
    """Last in this module: it takes the worker node away."""
    slow = {
        "recovery": {"preset": "cpu-fast", "max_steps": 600, "batch_size": 8},
        "asc": {"thresholds": [0.9]},
        "comparisons": {"strategies": ["top"], "quantized_baselines": []},
    }
    local = _run(str(_config(workspace, "fault-local", **slow)))
    assert local.returncode == 0, local.stderr[-3000:]
    config = _config(workspace, "fault", {"kind": "ray", "address": cluster.address}, **slow)
    command = [sys.executable, "-c", "from asc_deploy.cli import main; main()", "run", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **RAY_ENV}
    run = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    killed = threading.Event()

    def watch() -> None:
        for line in run.stdout:
            lines.append(line)
            # Ray prefixes a task's lines with "(task name pid=N)": kill the worker node as
            # soon as one of its processes is recovering a model.
            if not killed.is_set() and "[stage] recover" in line and "pid=" in line:
                pid = int(line.split("pid=")[1].split(")")[0].split(",")[0])
                if cluster.on_worker_node(pid):
                    cluster.kill_worker_node()
                    killed.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    code = run.wait(900)
    reader.join(30)
    output = "".join(lines)
    assert killed.is_set(), "no recovery ran on the worker node:\n" + output[-3000:]
    assert code == 0, output[-3000:]

    _same_outcome(_results(workspace, "fault"), _results(workspace, "fault-local"))
    records = _records(workspace, "fault")
    assert set(records) == set(_records(workspace, "fault-local"))  # nothing lost
    recoveries = [r for name, r in records.items() if name.startswith("recover-")]
    assert recoveries and any(r["ran_on"]["node_id"] == cluster.head_node for r in recoveries)
    # Nothing duplicated or left half-written: no temporaries, one evaluation per model/variant.
    root = workspace / "exports" / "fault"
    assert [p for p in root.rglob(".*") if ".tmp-" in p.name] == []
    evaluations = [(e["model"], e["variant"]) for e in _results(workspace, "fault")["evaluations"]]
    assert len(evaluations) == len(set(evaluations))
    # And the records resume: the head alone reruns nothing.
    again = _run(str(config))
    assert again.returncode == 0 and _submitted(again.stderr) == [], again.stderr[-2000:]
