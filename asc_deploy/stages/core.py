"""What a stage is, and the one place that caches them.

A stage is a function with a name, the config settings it reads (dotted paths into the run
config: `task`, `asc.epsilon`) and the type of record it returns. `run_stage` keys its cache on
the stage's name, the `model_dump()` of every setting it reads and the identities (content hashes)
of its inputs, and hands the function only those settings, so no stage can read a value that its
key does not hold. A record whose key matches is reused: that is how a run resumes.

What the store hands an executor (`StageCall`) and gets back (`Outcome`) are defined here, with
the executor it uses when given none (`LocalExecutor`), so the store needs nothing from
asc_deploy/executors/, which builds on this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from asc_deploy.fsutil import (
    hash_folder,
    hash_json,
    read_json,
    sha256_file,
    utc_now,
    write_json_atomic,
)
from asc_deploy.progress import status_line

R = TypeVar("R", bound=BaseModel)


class Settings(Mapping[str, Any]):
    """The settings a stage declared, and only those: reading any other path is a KeyError."""

    def __init__(self, values: Mapping[str, Any]):
        self._values = dict(values)

    def __getitem__(self, path: str) -> Any:
        if path not in self._values:
            raise KeyError(
                f"setting '{path}' was not declared by this stage (declared: "
                f"{', '.join(self._values)}); add it to the stage's `reads`"
            )
        return self._values[path]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class Context:
    """Where a run writes, and which stages to redo: never part of a cache key."""

    root: Path
    force: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Stage(Generic[R]):
    name: str
    reads: tuple[str, ...]
    record: type[R]
    fn: Callable[..., R]  # fn(settings, context, **inputs) -> record


def stage(name: str, reads: tuple[str, ...], record: type[R]):
    """Declare `fn(settings, context, **inputs) -> record` as a stage."""

    def declare(fn: Callable[..., R]) -> Stage[R]:
        return Stage(name, reads, record, fn)

    return declare


def read_setting(config: BaseModel, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def settings_from(config: BaseModel, reads: tuple[str, ...]) -> Settings:
    return Settings({path: read_setting(config, path) for path in reads})


def identity(value: Any) -> Any:
    """What an input contributes to a cache key: content hashes for files, dumps for records."""
    if hasattr(value, "data_identity"):  # a Task: its data's content, not where it lives
        return {split: value.data_identity(split) for split in ("train", "eval")}
    if isinstance(value, BaseModel):
        return hash_json(value.model_dump(mode="json"))
    if isinstance(value, Path):
        if (value / "manifest.json").is_file():  # an artifact: its manifest holds file hashes
            return sha256_file(value / "manifest.json")
        if value.is_dir():
            return hash_folder(value)
        return sha256_file(value) if value.is_file() else str(value)
    if isinstance(value, list | tuple):
        return [identity(v) for v in value]
    if isinstance(value, dict):
        return {str(k): identity(v) for k, v in value.items()}
    return value


def _dump(value: Any) -> Any:
    if not isinstance(value, BaseModel):
        return value
    return value.model_dump(mode="json", exclude=getattr(type(value), "cache_exclude", None))


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


class LocalExecutor:
    """Every stage in this process, one after another, when its record is asked for (so the
    order, the output and a failure are those of a plain loop)."""

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


@dataclass
class StageStore:
    """Stage records under `<run>/stages/`, keyed by what each stage reads and consumes.

    The `executor` computes what is not recorded: here, one stage after another (local, the
    default), or as tasks on a Ray cluster (asc_deploy/executors/). Either way the records are
    the same files, written here, so a run resumes under either executor."""

    context: Context
    executor: Any = field(default=None)  # an asc_deploy.executors Executor; None: LocalExecutor
    # Record file -> (stage, the seconds its work took): every record this run used, reused or
    # computed, so a run resumed across sessions still adds up its compute time.
    ledger: dict[str, tuple[str, float | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.executor is None:
            self.executor = LocalExecutor()

    def run(self, stage: Stage[R], config: BaseModel, label: str = "", **inputs: Any) -> R:
        """The stage's record: reused when its key matches a stored one, else computed."""
        return self.submit(stage, config, label, **inputs).result()

    def submit(
        self,
        stage: Stage[R],
        config: BaseModel,
        label: str = "",
        target: str | None = None,
        **inputs: Any,
    ) -> Pending[R]:
        """`run` without waiting: `.result()` gives the record. A recorded stage is never handed
        to the executor; `target` pins a bench to the hosts holding that Ray resource."""
        settings = settings_from(config, stage.reads)
        key_doc = {
            "stage": stage.name,
            "settings": {path: _dump(v) for path, v in settings.items()},
            "inputs": {name: identity(v) for name, v in inputs.items()},
        }
        key = hash_json(key_doc)
        path = self.context.root / "stages" / f"{stage.name}{'-' + label if label else ''}.json"
        if stage.name not in self.context.force and path.is_file():
            stored = read_json(path)
            if stored.get("key") == key:
                self.ledger[path.name] = (stage.name, stored.get("seconds"))
                return Pending(lambda: stage.record.model_validate(stored["result"]))
        call = StageCall(stage, settings, self.context, inputs, key_doc["inputs"], label, target)
        job = self.executor.submit(call)

        def record() -> R:
            outcome = job.result()
            document = {
                "key": key,
                "stage": stage.name,
                "inputs": key_doc,
                "result": outcome.record.model_dump(mode="json"),
                # How long the work took, for run-time accounting across resumed runs.
                "seconds": outcome.seconds,
                "finished": utc_now(),
            }
            if outcome.ran_on is not None:  # where a cluster ran it (absent for local runs)
                document["ran_on"] = outcome.ran_on
            write_json_atomic(path, document)
            self.ledger[path.name] = (stage.name, outcome.seconds)
            return outcome.record

        return Pending(record, in_flight=getattr(job, "in_flight", False))

    def compute_time(self) -> dict[str, dict[str, Any]]:
        """Per stage: the records this run used, the seconds their work took, and how many were
        written before records kept their time (`untimed`)."""
        out: dict[str, dict[str, Any]] = {}
        for stage, seconds in self.ledger.values():
            entry = out.setdefault(stage, {"records": 0, "seconds": 0.0, "untimed": 0})
            entry["records"] += 1
            if seconds is None:
                entry["untimed"] += 1
            else:
                entry["seconds"] = round(entry["seconds"] + seconds, 2)
        return out


class Pending(Generic[R]):
    """A record that may still be computing elsewhere; `result()` waits for it (once).

    `in_flight`: already running somewhere (a cluster task) rather than computed on demand."""

    def __init__(self, compute: Callable[[], R], in_flight: bool = False):
        self._compute: Callable[[], R] | None = compute
        self._value: R | None = None
        self.in_flight = in_flight

    def result(self) -> R:
        if self._compute is not None:
            self._value, self._compute = self._compute(), None
        return self._value  # type: ignore[return-value]


def gather(pending: Iterable[Pending[R]]) -> list[R]:
    """Every record in order. After a failure, work already in flight still settles and is
    recorded (a rerun resumes after it), work not started is not begun; then the first failure
    is raised."""
    results, failure = [], None
    for job in list(pending):
        if failure is not None and not job.in_flight:
            continue
        try:
            results.append(job.result())
        except Exception as exc:  # re-raised below, once the work in flight has settled
            failure = failure or exc
    if failure is not None:
        raise failure
    return results


def announce(message: str) -> None:
    status_line(f"[stage] {message}")
