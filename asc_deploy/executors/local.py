"""The local executor: every stage in this process, one after another, when its record is asked
for (so the order, the output and a failure are those of a plain loop)."""

from __future__ import annotations

import time

from asc_deploy.executors.base import Outcome, StageCall
from asc_deploy.stages.core import Pending


class LocalExecutor:
    kind = "local"

    def submit(self, call: StageCall) -> Pending[Outcome]:
        def compute() -> Outcome:
            started = time.perf_counter()
            record = call.stage.fn(call.settings, call.context, **call.inputs)
            return Outcome(record, seconds=round(time.perf_counter() - started, 2))

        return Pending(compute)

    def bench_waves(self, targets: list[str]) -> list[list[str]]:
        return [[target] for target in targets]

    def close(self) -> None:
        pass
