"""Training examples reserved for the suite's own decisions: never trained on.

The end of the training split is cut into two reserves:

    [ trained on (fine-tuning, recovery, profiling, selection, calibration) | eval | screening ]

`task.holdout: n` reserves the last `n` examples: screening and the int8-mixed search score on
them. `task.eval_holdout: m` reserves `m` before those: every evaluation also scores on them
and the release decisions are taken there, on a set sized for the accuracy budget where the
official evaluation split is too small to resolve it. Every reader of the training split sees
only the rest. Scored on examples the model was trained on, a choice rewards what was memorised
rather than what generalises; scored on the evaluation split, it would leak that split into the
comparison it later judges.

What "not trained on" must mean depends on the data. SST-2's training split holds every phrase
of each sentence's parse as its own example (a sentence and ten of its fragments): a block of
training rows scored as a reserve is mostly fragments of trained-on sentences, and there an
artifact measured 1.6 points better than on dev. So for single texts the eval reserve is `m`
whole texts (inside no other training text, with dev's length distribution on SST-2), scanned
back from the screening reserve, and every fragment of them is withheld from training as well.
A text that occurs twice (about 1% of SST-2's phrases) is never taken. Sentence pairs are whole
by nature. For extractive QA the reserve is the questions of whole articles (a few more than
asked), less any whose context is read elsewhere, so no context is both trained on and scored.
`eval_reserve_check` counts the overlap again from what each reader is handed, and a run
records it (0) or refuses to start.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
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
    """A task whose training split lacks the screening reserve (its last `holdout` examples,
    `held_out()`) and the eval reserve (`eval_holdout` whole texts before it, `eval_held_out()`,
    with every fragment of them)."""

    def __init__(self, task: Task, holdout: int, eval_holdout: int = 0):
        self._task, self.holdout, self.eval_holdout = task, holdout, eval_holdout
        self._parts: _Parts | None = None  # cut once: the eval reserve's search reads every text

    def _split(self) -> _Parts:
        if self._parts is None:
            train = self._task.load_examples("train")
            screening = _cut(train, len(train), self.holdout, "task.holdout")
            self._parts = _eval_reserve(train, screening, self.eval_holdout)
        return self._parts

    def load_examples(self, split: Split, max_samples: int | None = None) -> list[Example]:
        if split != "train":
            return self._task.load_examples(split, max_samples)
        return self._split().trained[:max_samples]

    def held_out(self, max_samples: int | None = None) -> list[Example]:
        return self._split().screening[:max_samples]

    def eval_held_out(self) -> list[Example]:
        return self._split().scored

    def eval_reserved(self) -> int:
        """How many training examples the eval reserve withholds from training (scored, and
        fragments of what is scored)."""
        parts = self._split()
        return parts.before_screening - len(parts.trained)

    def data_identity(self, split: Split, max_samples: int | None = None) -> dict:
        if split != "train":
            return self._task.data_identity(split, max_samples)
        identity = {
            "reserved_from": self._task.data_identity("train"),
            "held_out_examples": len(self._split().screening),
            "max_samples": max_samples,
        }
        if self.eval_holdout:  # absent when off: a run without it keeps its cache keys
            identity["eval_held_out_examples"] = self.eval_reserved()
            identity["eval_reserve"] = "whole texts, fragments withheld"
        return identity


@dataclass(frozen=True)
class _Parts:
    """A reserved training split: what is trained on, the eval reserve, the screening reserve."""

    trained: list[Example]
    scored: list[Example]
    screening: list[Example]
    before_screening: int  # training examples before the screening reserve


def _eval_reserve(train: list[Example], screening: int, size: int) -> _Parts:
    """The eval reserve of `size` examples before the screening reserve at `screening`.

    QA: the questions of whole articles (`_cut`), less any whose context is read elsewhere.
    Classification: scanning back from the screening reserve, the last `size` whole texts:
    phrase datasets (SST-2 holds every phrase of a sentence's parse as its own example) make a
    fragment and the sentence around it two examples, so a scored text must lie inside no other
    text, and every fragment of it is withheld from training (trained on, a model has learnt the
    sentence's parts, and its score is no longer one of unseen text). A text that occurs twice
    is never taken: one copy would be trained on."""
    pool, rest = train[:screening], train[screening:]
    if size and "context" in train[0]:
        start = _cut(train, screening, size, "task.eval_holdout")
        seen = _Seen(train[:start] + rest)
        scored = [e for e in train[start:screening] if not seen.has(e)]
        return _Parts(train[:start], scored, rest, screening)
    taken = _whole_texts(train, screening, size)
    scored = [pool[i] for i in sorted(taken)]
    fragments = _Spans(scored)
    trained = [e for i, e in enumerate(pool) if i not in taken and not fragments.has(e)]
    return _Parts(trained, scored, rest, screening)


def _whole_texts(train: list[Example], end: int, size: int) -> set[int]:
    """The indices of the last `size` examples before `end` whose text no other training text
    contains and no other training example repeats."""
    if not size:
        return set()
    counts = Counter(_content(e) for e in train)
    containers = _Containers(train)
    taken: set[int] = set()
    for i in range(end - 1, -1, -1):
        if counts[_content(train[i])] == 1 and containers.is_whole(i):
            taken.add(i)
            if len(taken) == size:
                return taken
    before = "" if end == len(train) else " before the task.holdout reserve"
    raise UserError(
        f"task.eval_holdout: the training split has {len(taken)} whole texts{before} (in no "
        f"other training text, not repeated), too few to reserve {size}; lower task.eval_holdout"
    )


class _Containers:
    """Asks whether any longer training text contains an example's text as a run of words,
    looking only at the texts that hold its rarest word (a pass over all of them per example
    would take minutes on SST-2's 67k phrases). Sentence pairs are always whole: a pair is
    scored as a pair, and the fragment relation is a single text's."""

    def __init__(self, train: list[Example]):
        self._padded = [_padded(e) for e in train]
        self._postings: dict[str, list[int]] = defaultdict(list)
        for i, padded in enumerate(self._padded):
            for word in set((padded or "").split()):
                self._postings[word].append(i)

    def is_whole(self, i: int) -> bool:
        needle = self._padded[i]
        if needle is None:  # a pair is whole
            return True
        words = set(needle.split())
        if not words:  # an empty text lies inside any other
            return False
        rarest = min(words, key=lambda word: len(self._postings[word]))
        return not any(
            len(self._padded[j]) > len(needle) and needle in self._padded[j]
            for j in self._postings[rarest]
        )


class _Spans:
    """Every run of words of some single texts: a training text among them is a fragment of one."""

    def __init__(self, examples: list[Example]):
        self._runs: set[str] = set()
        for example in examples:
            words = (_padded(example) or "").split()
            for a in range(len(words)):
                for b in range(a + 1, len(words) + 1):
                    self._runs.add(" ".join(words[a:b]))

    def has(self, example: Example) -> bool:
        padded = _padded(example)
        return padded is not None and padded.strip() in self._runs


def _padded(example: Example) -> str | None:
    """A single text's words, space-separated with a space at each end (so that `in` matches
    whole words only); None for a sentence pair or a QA example."""
    if example.get("text_pair") is not None or "context" in example:
        return None
    return f" {' '.join(str(example.get('text') or '').split())} "


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
    """The eval reserve and its overlap with what the other readers are handed: the training
    split (every consumer reads a prefix of it) and the screening reserve. Overlap is a shared id
    or text, or (training split) a trained-on text that is a fragment of a scored one. Both must
    be 0; a shared text with the evaluation split is no leak (both are only scored), so it is
    counted, not refused. Ids are compared within the training split only (each split numbers
    its own rows). None when the task has no eval reserve."""
    if not isinstance(task, Reserved) or not task.eval_holdout:
        return None
    scored = task.eval_held_out()
    trained = task.load_examples("train")
    seen, screening = _Seen(trained), _Seen(task.held_out())
    fragments = _Spans(scored)
    evaluation = {_content(e) for e in task.load_examples("eval")}
    return EvalHoldout(
        examples=len(scored),
        reserved=task.eval_reserved(),
        overlap_training=sum(seen.has(e) for e in scored) + sum(map(fragments.has, trained)),
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
