"""What a cluster node does with a stage it picks up: enter the folder the run was started in,
check that every input is the content the driver keyed the stage on, run the stage, and say where
it ran. Imports Ray only for the node's identity, inside a Ray worker."""

from __future__ import annotations

import importlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from asc_deploy.errors import UserError
from asc_deploy.fsutil import hash_folder, read_json
from asc_deploy.stages.core import Settings, Stage, identity

SHARED = (
    "the run folder, the model and the data must be the same files on every node (one shared "
    "mount at the same path)"
)


def stage_address(stage: Stage) -> tuple[str, str]:
    """(module, attribute) naming a declared stage, so a node imports it instead of unpickling
    a function by value."""
    module = sys.modules[stage.fn.__module__]
    for name, value in vars(module).items():
        if value is stage:
            return module.__name__, name
    raise ValueError(f"stage {stage.name} is not a module-level name of {module.__name__}")


def resolve_stage(address: tuple[str, str]) -> Stage:
    module, name = address
    return getattr(importlib.import_module(module), name)


def node_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        facts["node_id"] = ray.get_runtime_context().get_node_id()
        facts["ip"] = ray.util.get_node_ip_address()
    except Exception:  # not inside a Ray worker (the local path, a test)
        facts.update(node_id=None, ip=None)
    return facts


def enter_run_folder(cwd: str) -> None:
    """Relative paths in the config and in records resolve against the folder the run was
    started in; a node must have it."""
    if not Path(cwd).is_dir():
        raise UserError(
            f"node {socket.gethostname()}: {cwd}, the folder the run was started in, does not "
            f"exist here; {SHARED}"
        )
    os.chdir(cwd)


def check_inputs(title: str, inputs: dict[str, Any], identities: dict[str, Any]) -> None:
    """Every input's identity (content hashes of folders, artifact manifests, the task's data)
    recomputed here must equal the driver's; model folders and artifacts are re-hashed file by
    file. A node on a stale or half-synced mount stops here instead of computing on other bytes."""
    for name, value in inputs.items():
        found = identity(value)
        if found != identities.get(name):
            raise UserError(
                f"node {socket.gethostname()}: input '{name}' of {title} is not the content the "
                f"run recorded (hash {_short(found)}, recorded {_short(identities.get(name))}); "
                f"{SHARED}, and fully written before the stage starts"
            )
        _check_contents(title, name, value)


def _check_contents(title: str, name: str, value: Any) -> None:
    if isinstance(value, BaseModel):
        path, expected = getattr(value, "path", None), getattr(value, "hash", None)
        if path and expected and Path(path).is_dir():
            found = hash_folder(path)
            if found != expected:
                raise UserError(
                    f"node {socket.gethostname()}: {path} (input '{name}' of {title}) has "
                    f"content hash {found[:12]}, the record says {expected[:12]}; {SHARED}"
                )
        elif path and expected and not Path(path).exists():
            raise UserError(
                f"node {socket.gethostname()}: {path} (input '{name}' of {title}) does not "
                f"exist here; {SHARED}"
            )
    elif isinstance(value, Path) and (value / "manifest.json").is_file():
        from asc_deploy.manifest import verify_artifact

        try:
            verify_artifact(value)
        except UserError as exc:
            raise UserError(f"node {socket.gethostname()}: {exc}; {SHARED}") from None
    elif isinstance(value, list | tuple):
        for item in value:
            _check_contents(title, name, item)
    elif isinstance(value, dict):
        for item in value.values():
            _check_contents(title, name, item)


def _short(value: Any) -> str:
    from asc_deploy.fsutil import hash_json

    text = value if isinstance(value, str) else hash_json(value)
    return text[:12]


def run_stage_task(
    address: tuple[str, str],
    title: str,
    settings: dict[str, Any],
    context,
    inputs: dict[str, Any],
    identities: dict[str, Any],
    cwd: str,
    target: str | None,
) -> dict[str, Any]:
    """The body of every stage task on a node: its record as JSON, and where it ran."""
    started = time.perf_counter()
    enter_run_folder(cwd)
    stage = resolve_stage(address)
    check_inputs(title, inputs, identities)
    result = stage.fn(Settings(settings), context, **inputs)
    ran_on = {**node_facts(), "seconds": round(time.perf_counter() - started, 2)}
    if target is not None:
        ran_on["target"] = target
    document = result.model_dump(mode="json")
    if stage.name == "bench":  # the bench run says which node measured it, beside its host facts
        document["host"].update(
            ray_node_id=ran_on["node_id"], ray_node_ip=ran_on["ip"], ray_target=target
        )
    return {"result": document, "ran_on": ran_on}


def probe_node(probe: str, token: str, paths: list[str]) -> str | None:
    """Preflight on one node: None when it sees the driver's probe file (same content) and every
    path; else what it lacks."""
    try:
        if read_json(probe) != token:
            return f"sees another file at {probe}: the output folder is not the driver's"
    except (OSError, ValueError):
        return f"does not see {probe}: the output folder is not shared with the driver"
    for path in paths:
        if not Path(path).exists():
            return f"does not see {path}"
    return None
