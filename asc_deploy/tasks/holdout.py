"""Training examples reserved for the suite's own decisions: never trained on, never evaluated.

`task.holdout: n` reserves the training split's last `n` examples. Fine-tuning, recovery,
profiling, greedy selection and calibration see only the rest; screening and the int8-mixed
search score on the reserve. Scored on examples the model was trained on, a choice rewards what
was memorised rather than what generalises; scored on the evaluation split, it would leak that
split into the comparison it later judges. For extractive QA the reserve starts at an article
boundary (a few more than `n` questions), so no context is both trained on and scored.
"""

from __future__ import annotations

from typing import Any, Literal

from asc_deploy.errors import UserError
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
    """A task whose training split lacks its last `holdout` examples; `held_out()` has them."""

    def __init__(self, task: Task, holdout: int):
        self._task, self._holdout = task, holdout
        self._cut_at: int | None = None  # found once: the QA cut walks back to an article start

    def _split(self) -> tuple[list[Example], int]:
        train = self._task.load_examples("train")
        if self._cut_at is None:
            self._cut_at = _cut(train, self._holdout)
        return train, self._cut_at

    def load_examples(self, split: Split, max_samples: int | None = None) -> list[Example]:
        if split != "train":
            return self._task.load_examples(split, max_samples)
        train, cut = self._split()
        return train[: cut if max_samples is None else min(cut, max_samples)]

    def held_out(self, max_samples: int | None = None) -> list[Example]:
        train, cut = self._split()
        return train[cut:] if max_samples is None else train[cut : cut + max_samples]

    def data_identity(self, split: Split, max_samples: int | None = None) -> dict:
        if split != "train":
            return self._task.data_identity(split, max_samples)
        train, cut = self._split()
        return {
            "reserved_from": self._task.data_identity("train"),
            "held_out_examples": len(train) - cut,
            "max_samples": max_samples,
        }


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


def reserve(task: Task, holdout: int) -> Task:
    """`task` with its last `holdout` training examples reserved; 0 reserves nothing."""
    return Reserved(task, holdout) if holdout else task  # type: ignore[return-value]


def held_out_scoring(task: Task, samples: int, key: str) -> Task:
    """The view that scores a decision on `samples` reserved examples; a UserError naming `key`
    (the setting that asked) when the task reserves nothing."""
    if not isinstance(task, Reserved):
        raise UserError(
            f"{key} scores on training examples reserved from fine-tuning, and this task reserves "
            f"none; set task.holdout (at least {samples})"
        )
    return HeldOutScoring(task, samples)  # type: ignore[return-value]


def _cut(train: list[Example], holdout: int) -> int:
    """Where the reserve starts: `holdout` examples from the end, moved back to the start of an
    article (QA examples carry their article's title) so that no context is on both sides."""
    if len(train) <= holdout:
        raise UserError(
            f"the training split has {len(train)} examples, too few to reserve "
            f"{holdout} (task.holdout); lower task.holdout"
        )
    cut = len(train) - holdout
    while cut > 0 and "title" in train[cut] and train[cut]["title"] == train[cut - 1]["title"]:
        cut -= 1
    if cut == 0:
        raise UserError(
            f"reserving {holdout} training questions takes every article; lower task.holdout"
        )
    return cut
