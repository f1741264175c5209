"""The Ray executor: stages without a record run as Ray tasks on a cluster.

Fine-tunes, profiles, evaluations and exports ask the scheduler for the CPUs, GPUs and memory
that `executor.resources` names for their stage (one CPU unless told). A bench runs once per
`executor.targets` entry, pinned to the nodes that hold that custom resource and reserving the
whole node's CPUs, and targets that share a node are measured one after another, so each target
measures on its own hardware, undisturbed. Every node works in the same run folder (a shared
mount): the driver keeps the stage records; a node checks the content hashes of each input
before it starts (pickup.py). Ray is imported here only, and this module only when
`executor.kind` is `ray`.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from asc_deploy.config import ExecutorConfig, RunConfig, StageResources
from asc_deploy.errors import UserError
from asc_deploy.executors.pickup import probe_node, run_stage_task, stage_address
from asc_deploy.progress import status_line
from asc_deploy.stages.core import LocalExecutor, Outcome, Pending, StageCall

# Environment a task needs as the driver has it: offline hub flags, the suite's own switches.
FORWARDED_ENV = ("HF_", "TRANSFORMERS_", "ASC_")
PROBE_TIMEOUT_S = 120
INSTALL = 'executor.kind ray needs Ray on this machine: pip install "asc-deploy[ray]"'


_joined = False  # this process joined the cluster (and so leaves it when the run ends)


class ClusterError(UserError):
    """The cluster lost work it had been given (a node or worker died past the retries); exit 4,
    apart from a user's mistake (2) and a failed (1) or inconclusive (3) gate."""

    exit_code = 4


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL) from None
    return ray


def connect(config: ExecutorConfig) -> bool:
    """Join the cluster at `config.address` (once per process); True when this call joined."""
    global _joined
    ray = _ray()
    if ray.is_initialized():
        return False
    address = config.address
    if address not in ("auto", "local"):
        _check_reachable(address)
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    options: dict[str, Any] = dict(
        namespace="asc-deploy",
        logging_level=logging.WARNING,
        log_to_driver=True,
        runtime_env={"env_vars": env} if env else None,
    )
    if address == "local":
        options["include_dashboard"] = False
    try:
        ray.init(address=None if address == "local" else address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (
            "start one with `ray start --head`, set RAY_ADDRESS, or set executor.address"
            if address == "auto"
            else "check that the head runs the same Ray version and executor.address is right"
        )
        raise UserError(
            f"executor.address {address}: cannot join a Ray cluster ({first}); {hint}"
        ) from None
    _joined = True
    return True


def disconnect() -> None:
    """Leave the cluster if this process joined it (a caller's own Ray session is left alone)."""
    global _joined
    if _joined and _ray().is_initialized():
        _ray().shutdown()
    _joined = False


def _check_reachable(address: str) -> None:
    """Fail in seconds, naming the address, rather than in Ray's own long connection retries."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(
            f"executor.address {address}: no Ray head answers there ({reason}); start one with "
            f"`ray start --head --port={port}` or fix executor.address"
        ) from None


def alive_nodes() -> list[dict[str, Any]]:
    return [node for node in _ray().nodes() if node.get("Alive")]


def check_cluster(cfg: RunConfig) -> None:
    """Preflight for `executor.kind: ray`, before any work is submitted: the cluster answers,
    each target resource is on some node, each stage's request fits some node, and every node
    sees the run folder, the model, the data and the folder the run started in."""
    connect(cfg.executor)
    try:
        nodes = alive_nodes()
        if not nodes:
            raise UserError(f"executor.address {cfg.executor.address}: the cluster has no node")
        _check_targets(cfg.executor, nodes)
        _check_requests(cfg.executor, nodes)
        _check_storage(cfg, nodes)
    except BaseException:
        disconnect()
        raise


def _check_targets(config: ExecutorConfig, nodes: list[dict]) -> None:
    offered = sorted({name for n in nodes for name in n["Resources"] if _is_custom(name)})
    for target in config.targets:
        if not any(target in n["Resources"] for n in nodes):
            raise UserError(
                f"executor.targets: no node of the Ray cluster has the resource '{target}' "
                f"(custom resources there: {', '.join(offered) or 'none'}); start the bench "
                f"host with `ray start --address=HEAD:PORT --resources '{{\"{target}\": 1}}'`"
            )


def _is_custom(name: str) -> bool:
    return name not in ("CPU", "GPU", "memory", "object_store_memory") and not name.startswith(
        "node:"
    )


def _check_requests(config: ExecutorConfig, nodes: list[dict]) -> None:
    """A request no node can meet would wait forever; say so now."""
    from asc_deploy.config import EXECUTOR_STAGES

    for stage in EXECUTOR_STAGES:
        if stage == "bench" and (not config.targets or "bench" not in config.resources):
            continue  # a bench without targets runs here; with targets it takes a whole node
        request = config.resources.get(stage, StageResources())
        holders = [n for n in nodes if all(t in n["Resources"] for t in _targets_of(stage, config))]
        if not any(_fits(request, n["Resources"]) for n in holders):
            biggest = max(nodes, key=lambda n: n["Resources"].get("CPU", 0))["Resources"]
            raise UserError(
                f"executor.resources.{stage}: asks for {_describe(request)}, which no node of "
                f"the cluster has (largest node: {biggest.get('CPU', 0):g} CPU, "
                f"{biggest.get('GPU', 0):g} GPU, {biggest.get('memory', 0) / 2**30:.1f} GB); "
                "lower the request or add a node that has it"
            )


def _targets_of(stage: str, config: ExecutorConfig) -> list[str]:
    return config.targets[:1] if stage == "bench" else []


def _fits(request: StageResources, resources: dict[str, float]) -> bool:
    memory = (request.memory_gb or 0) * 2**30
    return (
        resources.get("CPU", 0) >= request.num_cpus
        and resources.get("GPU", 0) >= request.num_gpus
        and resources.get("memory", 0) >= memory
    )


def _describe(request: StageResources) -> str:
    parts = [f"{request.num_cpus:g} CPU"]
    if request.num_gpus:
        parts.append(f"{request.num_gpus:g} GPU")
    if request.memory_gb:
        parts.append(f"{request.memory_gb:g} GB")
    return " + ".join(parts)


def _local_paths(cfg: RunConfig) -> list[str]:
    """What every node must see: the folder the run started in, a local model, the data."""
    paths = [os.getcwd()]
    for name in [cfg.model, *(spec.model for spec in cfg.comparisons.off_the_shelf)]:
        if Path(name).expanduser().exists():
            paths.append(str(Path(name).expanduser().resolve()))
    if cfg.task.data_dir is not None:
        paths.append(str(Path(cfg.task.data_dir).resolve()))
    if cfg.task.dataset and Path(cfg.task.dataset).exists():
        paths.append(str(Path(cfg.task.dataset).resolve()))
    return paths


def _check_storage(cfg: RunConfig, nodes: list[dict]) -> None:
    """A probe file in the run folder, read back by a zero-CPU task on each node."""
    import uuid

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from asc_deploy.fsutil import write_json_atomic

    ray = _ray()
    root = (Path(cfg.output_dir) / cfg.name).resolve()
    root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = root / f".asc-deploy-probe-{token}"
    write_json_atomic(probe, token)
    remote = ray.remote(probe_node)
    paths = _local_paths(cfg)
    try:
        refs = {
            node["NodeID"]: remote.options(
                num_cpus=0,
                max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            ).remote(str(probe), token, paths)
            for node in nodes
        }
        _, late = ray.wait(list(refs.values()), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
        for node in nodes:
            ref = refs[node["NodeID"]]
            where = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
            if ref in late:
                ray.cancel(ref, force=True)
                raise UserError(
                    f"storage: {where} did not answer the storage check within "
                    f"{PROBE_TIMEOUT_S} s; check that it is healthy (`ray status`)"
                )
            try:
                problem = ray.get(ref)
            except ray.exceptions.TaskUnschedulableError:
                # The node died between the listing and the probe (Ray lists a killed node as
                # alive for a few seconds): no stage can be scheduled there, so it needs no check.
                continue
            if problem:
                raise UserError(
                    f"storage: {where} {problem}; mount the output folder, the model and the "
                    f"data at the same paths on every node (or run with --executor local)"
                )
    finally:
        probe.unlink(missing_ok=True)


class RayExecutor:
    kind = "ray"

    def __init__(self, config: ExecutorConfig):
        self.config = config
        connect(config)
        self._remote = _ray().remote(run_stage_task)

    # -- scheduling ------------------------------------------------------------------------------
    def submit(self, call: StageCall) -> Pending[Outcome]:
        if call.stage.name in ("bench", "speed-trial") and call.target is None:
            return LocalExecutor().submit(call)  # no target: this machine measures, as locally
        options = self._options(call)
        ref = self._remote.options(**options).remote(
            stage_address(call.stage), call.title, dict(call.settings), call.context,
            call.inputs, call.identities, os.getcwd(), call.target,
        )  # fmt: skip
        status_line(f"[ray] {call.title}: submitted ({_describe_options(options)})")
        return Pending(lambda: self._collect(ref, call), in_flight=True)

    def _options(self, call: StageCall) -> dict[str, Any]:
        stage = call.stage.name
        options: dict[str, Any] = {
            "name": f"asc-deploy {call.title}",
            "max_retries": self.config.max_retries,
            "retry_exceptions": False,  # a stage's own error is not cured by running it again
        }
        if call.target is not None and stage == "bench" and "bench" not in self.config.resources:
            cpus = min(n["Resources"].get("CPU", 0) for n in self._holders(call.target))
            request = StageResources(num_cpus=cpus)  # the whole node: nothing else runs there
        else:
            request = self.config.resources.get(stage, StageResources())
        options["num_cpus"] = request.num_cpus
        options["num_gpus"] = request.num_gpus
        if request.memory_gb:
            options["memory"] = int(request.memory_gb * 2**30)
        if call.target is not None:
            options["resources"] = {call.target: 1}
        return options

    def _holders(self, target: str) -> list[dict]:
        holders = [n for n in alive_nodes() if target in n["Resources"]]
        if not holders:
            raise ClusterError(
                f"bench: no live node of the cluster holds '{target}' any more; restart that "
                "bench host and run again (the finished stages are recorded)"
            )
        return holders

    def bench_waves(self, targets: list[str]) -> list[list[str]]:
        """Targets grouped so that no two in a group share a node: a node measures one target at
        a time."""
        nodes_of = {t: {n["NodeID"] for n in self._holders(t)} for t in targets}
        waves: list[tuple[list[str], set[str]]] = []
        for target in targets:
            for members, used in waves:
                if not used & nodes_of[target]:
                    members.append(target)
                    used |= nodes_of[target]
                    break
            else:
                waves.append(([target], set(nodes_of[target])))
        return [members for members, _ in waves]

    # -- results ---------------------------------------------------------------------------------
    def _collect(self, ref, call: StageCall) -> Outcome:
        ray = _ray()
        from ray.exceptions import RayError, RayTaskError

        try:
            document = ray.get(ref)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, UserError):  # one line, as when the stage runs here
                error = UserError(f"{call.title}: {cause}")
                error.exit_code = cause.exit_code
                raise error from None
            raise
        except RayError as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ClusterError(
                f"{call.title}: lost on the cluster after {self.config.max_retries} retries "
                f"({type(exc).__name__}: {first}); the stages that finished are recorded: run "
                "again to resume"
            ) from None
        record = call.stage.record.model_validate(document["result"])
        ran = document["ran_on"]
        status_line(
            f"[ray] {call.title}: done on {ran['host']} ({ran['ip']}, node "
            f"{str(ran['node_id'])[:8]}) in {ran['seconds']:.1f} s"
        )
        return Outcome(record, ran, seconds=ran["seconds"])

    def close(self) -> None:
        disconnect()


def _describe_options(options: dict[str, Any]) -> str:
    parts = [f"{options.get('num_cpus', 0):g} CPU"]
    if options.get("num_gpus"):
        parts.append(f"{options['num_gpus']:g} GPU")
    if options.get("memory"):
        parts.append(f"{options['memory'] / 2**30:.1f} GB")
    parts += [f"{name}" for name in options.get("resources", {})]
    return ", ".join(parts)
