"""A held-out slice of the *training* split, for decisions that must not see the evaluation split.

Screening candidates (and any other choice made before the final evaluation) trains on the
training split minus its last `n` examples and scores on those `n`: the evaluation split is
never read, so the comparison it later judges stays honest. For extractive QA the tail starts
at an article boundary (a few more than `n` questions), so no context is trained on and scored.
"""

from __future__ import annotations

from typing import Any, Literal

from asc_deploy.errors import UserError
from asc_deploy.tasks.base import Example, Task

Split = Literal["train", "eval"]


class _View:
    """A task whose splits are slices of the underlying task's training split."""

    def __init__(self, task: Task, holdout: int, role: Literal["fit", "score"]):
        self._task, self._holdout, self._role = task, holdout, role

    def __getattr__(self, name: str) -> Any:  # encode, metrics, names: the task's own
        return getattr(self._task, name)

    def _slice(self) -> list[Example]:
        train = self._task.load_examples("train")
        cut = _cut(train, self._holdout)
        return train[:cut] if self._role == "fit" else train[cut:]

    def load_examples(self, split: Split, max_samples: int | None = None) -> list[Example]:
        examples = self._slice()
        if (self._role == "fit") != (split == "train"):
            # The fit view has no evaluation split and the score view no training split.
            raise UserError(f"a held-out {self._role} view has no {split} split")
        return examples[:max_samples] if max_samples is not None else examples

    def data_identity(self, split: Split, max_samples: int | None = None) -> dict:
        identity = {
            "held_out_of": self._task.data_identity("train"),
            "role": self._role,
            "holdout": self._holdout,
            "max_samples": max_samples,
        }
        train = self._task.load_examples("train")
        cut = _cut(train, self._holdout)
        if cut != len(train) - self._holdout:  # moved to an article boundary
            identity["held_out_examples"] = len(train) - cut
        return identity


def _cut(train: list[Example], holdout: int) -> int:
    """Where the held-out tail starts: `holdout` examples from the end, moved back to the start
    of an article (QA examples carry their article's title) so that no context is on both sides."""
    if len(train) <= holdout:
        raise UserError(
            f"the training split has {len(train)} examples, too few to hold out "
            f"{holdout} for screening; lower screening.samples"
        )
    cut = len(train) - holdout
    while cut > 0 and "title" in train[cut] and train[cut]["title"] == train[cut - 1]["title"]:
        cut -= 1
    if cut == 0:
        raise UserError(
            f"holding out {holdout} training questions takes every article; lower screening.samples"
        )
    return cut


def split_training(task: Task, holdout: int) -> tuple[Task, Task]:
    """(a task that trains on train[:-holdout], a task whose evaluation split is train[-holdout:]).

    Neither view reads the underlying task's evaluation split."""
    return _View(task, holdout, "fit"), _View(task, holdout, "score")  # type: ignore[return-value]
