"""What every task offers the rest of the suite: examples in, model inputs out, metrics back.

A task = data loading + preprocessing + postprocessing + metric. The ASC profiler, fine-tuning,
the PyTorch and ONNX evaluators and the exporter's validation all go through this interface, so
a new task family is one new module.

Shapes and names:
- an *example* is a dict with at least "id" (str) and the task's raw fields ("text", "text_pair",
  "label" for classification; "question", "context", "answers" for QA);
- a *feature* is one model input row: a dict with "input_ids", "attention_mask" and, where the
  tokenizer makes them, "token_type_ids" (lists of int, unpadded), plus "example_index" (int)
  and training targets ("labels"; "start_positions"/"end_positions") and, for QA,
  "offset_mapping" (None outside the context);
- model *outputs* for one feature: {"logits": (num_labels,)} or
  {"start_logits": (len,), "end_logits": (len,)} as numpy arrays, unpadded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np

Example = dict[str, Any]
Feature = dict[str, Any]
MODEL_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class Task(ABC):
    family: Literal["classification", "question-answering"]
    name: str
    primary_metric: str  # the key of compute_metrics() that gates and reports use
    # Metrics that must stay within the accuracy budget too: a model can hold the primary metric
    # by giving up a whole kind of example (SQuAD 2.0: answering nothing keeps F1 near 50).
    guarded_metrics: tuple[str, ...] = ()
    label_names: list[str] = []
    data_note: str = ""  # where the data came from, shown in every report that uses it

    @abstractmethod
    def data_identity(
        self, split: Literal["train", "eval"], max_samples: int | None = None
    ) -> dict:
        """What identifies a split's data for cache keys: source files' hashes or hub ids."""

    @abstractmethod
    def load_examples(
        self, split: Literal["train", "eval"], max_samples: int | None = None
    ) -> list[Example]:
        """Read a split; a non-empty list or a UserError naming what is wrong."""

    @abstractmethod
    def encode(
        self, tokenizer, examples: list[Example], for_training: bool = False
    ) -> list[Feature]:
        """Tokenise examples into features (QA: several per example, with overflow)."""

    @abstractmethod
    def predictions_from_outputs(
        self, examples: list[Example], features: list[Feature], outputs: list[dict[str, np.ndarray]]
    ) -> list[dict[str, Any]]:
        """One prediction record per example: {"id", "prediction", "gold", ...scores}."""

    @abstractmethod
    def compute_metrics(
        self, examples: list[Example], predictions: list[dict[str, Any]]
    ) -> dict[str, float]:
        """Metric name -> value (percentages for accuracy/EM/F1, as papers report them)."""


class SourcedTask(Task):
    """A task whose splits come from `DataSource`s: split lookup, caching and sample limits."""

    def __init__(
        self,
        name: str,
        sources: dict,
        max_samples: dict[str, int | None] | None = None,
        missing_split_hint: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.sources = sources
        self.max_samples = max_samples or {}
        self.missing_split_hint = missing_split_hint or {}
        self._cache: dict[str, list[Example]] = {}

    def source(self, split: Literal["train", "eval"]):
        from asc_deploy.errors import UserError

        src = self.sources.get(split)
        if src is None:
            hint = self.missing_split_hint.get(split, "set task.train_file / task.eval_file")
            raise UserError(f"task {self.name}: no {split} split available; {hint}")
        return src

    @abstractmethod
    def _load(self, split: Literal["train", "eval"]) -> None:
        """Read `split` into self._cache (a task may fill both splits at once)."""

    def _limit(self, split: str, max_samples: int | None) -> int | None:
        return max_samples if max_samples is not None else self.max_samples.get(split)

    def load_examples(
        self, split: Literal["train", "eval"], max_samples: int | None = None
    ) -> list[Example]:
        if split not in self._cache:
            self._load(split)
        limit = self._limit(split, max_samples)
        examples = self._cache[split]
        return examples[:limit] if limit is not None else list(examples)

    def data_identity(
        self, split: Literal["train", "eval"], max_samples: int | None = None
    ) -> dict:
        return {
            "task": self.name,
            "split": split,
            "source": self.source(split).identity(),
            "max_samples": self._limit(split, max_samples),
        }


def collate(
    features: list[Feature], pad_token_id: int, with_targets: bool = False
) -> dict[str, np.ndarray]:
    """Pad a batch to its longest row (dynamic padding) into int64 numpy arrays."""
    width = max(len(f["input_ids"]) for f in features)
    batch: dict[str, np.ndarray] = {}
    for name in MODEL_INPUT_NAMES:
        if name not in features[0]:
            continue
        pad = pad_token_id if name == "input_ids" else 0
        rows = np.full((len(features), width), pad, dtype=np.int64)
        for i, f in enumerate(features):
            rows[i, : len(f[name])] = f[name]
        batch[name] = rows
    if with_targets:
        for name in ("labels", "start_positions", "end_positions"):
            if name in features[0]:
                batch[name] = np.asarray([f[name] for f in features], dtype=np.int64)
    return batch
