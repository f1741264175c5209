"""What an executor does, and how one is made. What it is given (a `StageCall`) and gives back (an
`Outcome`) are the store's terms, in stages/core.py, with the local executor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from asc_deploy.stages.core import LocalExecutor, Outcome, Pending, StageCall

if TYPE_CHECKING:
    from asc_deploy.config import ExecutorConfig


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
    return LocalExecutor()
