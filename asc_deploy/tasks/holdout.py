"""Training examples reserved for the suite's own decisions: never trained on.

The end of the training split is cut into two reserves:

    [ trained on (fine-tuning, recovery, profiling, selection, calibration) | eval | screening ]

`task.holdout: n` reserves the last `n` examples: screening and the int8-mixed search score on
them. `task.eval_holdout: m` reserves the `m` before those: every evaluation also scores on them
and the release decisions are taken there, on a set sized for the accuracy budget where the
official evaluation split is too small to resolve it. Every reader of the training split sees
only the rest. Scored on examples the model was trained on, a choice rewards what was memorised
rather than what generalises; scored on the evaluation split, it would leak that split into the
comparison it later judges. For extractive QA each reserve starts at an article boundary (a few
more than asked), so no context is both trained on and scored.

Datasets repeat examples (about 1% of SST-2's training phrases occur twice), so an example of the
eval reserve whose id or text (QA: context) also occurs among the trained-on examples or the
screening reserve is left out of it; `eval_reserve_check` then counts the overlap again from
what each reader is handed, and a run records it (0) or refuses to start.
"""

from __future__ import annotations

from typing import Any, Literal

from asc_deploy.errors import UserError
from asc_deploy.records import EvalHoldout
from asc_deploy.tasks.base import Example, Task

Split = Literal["train", "eval"]


class _View:
    """A view of a task: whatever it does not override (encode, metrics, names) is the task's."""

    _task: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # unpickling asks before _task exists
            raise AttributeError(name)
        return getattr(self._task, name)


class Reserved(_View):
    """A task whose training split lacks its last `holdout + eval_holdout` examples:
    `held_out()` has the last `holdout`, `eval_held_out()` the `eval_holdout` before them."""

    def __init__(self, task: Task, holdout: int, eval_holdout: int = 0):
        self._task, self.holdout, self.eval_holdout = task, holdout, eval_holdout
        # (eval reserve start, screening reserve start), found once: QA cuts walk back to an
        # article start
        self._cuts: tuple[int, int] | None = None
        self._eval: list[Example] | None = None

    def _split(self) -> tuple[list[Example], int, int]:
        train = self._task.load_examples("train")
        if self._cuts is None:
            screening = _cut(train, len(train), self.holdout, "task.holdout")
            self._cuts = (_cut(train, screening, self.eval_holdout, "task.eval_holdout"), screening)
        return train, *self._cuts

    def load_examples(self, split: Split, max_samples: int | None = None) -> list[Example]:
        if split != "train":
            return self._task.load_examples(split, max_samples)
        train, cut, _ = self._split()
        return train[: cut if max_samples is None else min(cut, max_samples)]

    def held_out(self, max_samples: int | None = None) -> list[Example]:
        train, _, cut = self._split()
        return train[cut:] if max_samples is None else train[cut : cut + max_samples]

    def eval_held_out(self) -> list[Example]:
        """The eval reserve, less any example another reader of the training split also sees."""
        if self._eval is None:
            train, start, stop = self._split()
            seen = _Seen(train[:start] + train[stop:])
            self._eval = [e for e in train[start:stop] if not seen.has(e)]
        return self._eval

    def eval_reserved(self) -> int:
        """How many training examples the eval reserve takes (scored or left out)."""
        _, start, stop = self._split()
        return stop - start

    def data_identity(self, split: Split, max_samples: int | None = None) -> dict:
        if split != "train":
            return self._task.data_identity(split, max_samples)
        train, cut, screening = self._split()
        identity = {
            "reserved_from": self._task.data_identity("train"),
            "held_out_examples": len(train) - screening,
            "max_samples": max_samples,
        }
        if self.eval_holdout:  # absent when off: a run without it keeps its cache keys
            identity["eval_held_out_examples"] = screening - cut
        return identity


class HeldOutScoring(_View):
    """A reserved task whose evaluation split is its first `samples` held-out examples: what a
    screen scores on. It has no training split."""

    def __init__(self, task: Reserved, samples: int):
        self._task, self._samples = task, samples

    def load_examples(self, split: Split, max_samples: int | None = None) -> list[Example]:
        if split != "eval":
            raise UserError("a held-out scoring view has no training split")
        rows = self._task.held_out(self._samples)
        return rows[:max_samples] if max_samples is not None else rows

    def data_identity(self, split: Split, max_samples: int | None = None) -> dict:
        return {
            "held_out_of": self._task.data_identity("train"),
            "samples": self._samples,
            "max_samples": max_samples,
        }


class EvalHeldOut(_View):
    """A reserved task whose evaluation split is its eval reserve: what every evaluation also
    scores on (`task.eval_holdout`). It has no training split."""

    def __init__(self, task: Reserved):
        self._task = task

    def load_examples(self, split: Split, max_samples: int | None = None) -> list[Example]:
        if split != "eval":
            raise UserError("the eval holdout view has no training split")
        return self._task.eval_held_out()[:max_samples]

    def data_identity(self, split: Split, max_samples: int | None = None) -> dict:
        return {"eval_held_out_of": self._task.data_identity("train"), "max_samples": max_samples}


def reserve(task: Task, holdout: int, eval_holdout: int = 0) -> Task:
    """`task` with its last `holdout` training examples reserved for screening and the
    `eval_holdout` before them for evaluation; nothing reserved returns `task` itself."""
    if not holdout and not eval_holdout:
        return task
    return Reserved(task, holdout, eval_holdout)  # type: ignore[return-value]


def held_out_scoring(task: Task, samples: int, key: str) -> Task:
    """The view that scores a decision on `samples` reserved examples; a UserError naming `key`
    (the setting that asked) when the task reserves none for screening."""
    if not isinstance(task, Reserved) or not task.holdout:
        raise UserError(
            f"{key} scores on training examples reserved from fine-tuning, and this task reserves "
            f"none; set task.holdout (at least {samples})"
        )
    return HeldOutScoring(task, samples)  # type: ignore[return-value]


def eval_holdout_scoring(task: Task) -> Task | None:
    """The view every evaluation also scores on; None when the task has no eval reserve."""
    if isinstance(task, Reserved) and task.eval_holdout:
        return EvalHeldOut(task)  # type: ignore[return-value]
    return None


def eval_reserve_check(task: Task) -> EvalHoldout | None:
    """The eval reserve and its overlap, by id or text, with what the other readers are handed:
    the training split (every consumer reads a prefix of it) and the screening reserve. Both
    must be 0; a shared text with the evaluation split is no leak (both are only scored), so it
    is counted, not refused. Ids are compared within the training split only (each split
    numbers its own rows). None when the task has no eval reserve."""
    if not isinstance(task, Reserved) or not task.eval_holdout:
        return None
    scored = task.eval_held_out()
    trained = _Seen(task.load_examples("train"))
    screening = _Seen(task.held_out())
    evaluation = {_content(e) for e in task.load_examples("eval")}
    return EvalHoldout(
        examples=len(scored),
        reserved=task.eval_reserved(),
        overlap_training=sum(trained.has(e) for e in scored),
        overlap_screening=sum(screening.has(e) for e in scored),
        shared_with_eval=sum(_content(e) in evaluation for e in scored),
    )


class _Seen:
    """The ids and texts of some examples, to ask whether another example is among them."""

    def __init__(self, examples: list[Example]):
        self._ids = {e["id"] for e in examples}
        self._texts = {_content(e) for e in examples}

    def has(self, example: Example) -> bool:
        return example["id"] in self._ids or _content(example) in self._texts


def _content(example: Example) -> tuple:
    """What a model reads of an example: a QA question's context (a passage trained on with
    other questions is seen text), else the text and its pair."""
    if "context" in example:
        return ("context", example["context"])
    return (example.get("text"), example.get("text_pair"))


def _cut(train: list[Example], end: int, size: int, key: str) -> int:
    """Where a reserve of `size` examples ending at `end` starts, moved back to the start of an
    article (QA examples carry their article's title) so that no context is on both sides."""
    if not size:
        return end
    if end <= size:
        before = "" if end == len(train) else " before the task.holdout reserve"
        raise UserError(
            f"{key}: the training split has {end} examples{before}, too few to reserve "
            f"{size}; lower {key}"
        )
    cut = end - size
    while cut > 0 and "title" in train[cut] and train[cut]["title"] == train[cut - 1]["title"]:
        cut -= 1
    if cut == 0:
        raise UserError(f"{key}: reserving {size} training questions takes every article; lower it")
    return cut
