"""What an executor is given (a `StageCall`) and gives back (an `Outcome`), and how one is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from asc_deploy.config import ExecutorConfig
    from asc_deploy.stages.core import Context, Pending, Settings, Stage


@dataclass(frozen=True)
class StageCall:
    """One stage to compute: the settings it declared, its inputs, and their identities as the
    store computed them for the cache key (a node re-checks them when it picks the inputs up)."""

    stage: Stage
    settings: Settings
    context: Context
    inputs: dict[str, Any]
    identities: dict[str, Any]
    label: str = ""
    target: str | None = None  # bench only: the custom Ray resource naming the target hosts

    @property
    def title(self) -> str:
        return f"{self.stage.name}{' ' + self.label if self.label else ''}"


@dataclass(frozen=True)
class Outcome:
    record: BaseModel
    ran_on: dict[str, Any] | None = None  # where a cluster ran it: node id, ip, host, seconds
    seconds: float | None = None  # the stage's own wall time, wherever it ran


class Executor(Protocol):
    kind: str

    def submit(self, call: StageCall) -> Pending[Outcome]: ...

    def bench_waves(self, targets: list[str]) -> list[list[str]]: ...

    def close(self) -> None: ...


def open_executor(config: ExecutorConfig) -> Executor:
    """The executor the config names; `ray` connects to its cluster (Ray imported only here)."""
    if config.kind == "ray":
        from asc_deploy.executors.ray_executor import RayExecutor

        return RayExecutor(config)
    from asc_deploy.executors.local import LocalExecutor

    return LocalExecutor()
