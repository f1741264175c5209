"""Where the stages run. `local` (the default): here, one after another (`LocalExecutor`, in
stages/core.py beside the store that defaults to it). `ray`: the independent stages of a run as
tasks on a Ray cluster, benchmarks pinned to their target hosts.

Both go through one `StageStore` (stages/core.py): it keys and records every stage, and hands
an executor only the stages that have no record, so the records, and resuming from them, are
the same under either. Ray is imported only by `ray_executor`, when `executor.kind` is `ray`.
"""

from asc_deploy.executors.base import Executor, open_executor

__all__ = ["Executor", "open_executor"]
