"""Text classification: single sentences (SST-2) and sentence pairs (MRPC, RTE, MNLI, QQP, SNLI)."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from asc_deploy.data.readers import DataSource, Record
from asc_deploy.errors import UserError
from asc_deploy.tasks.base import MODEL_INPUT_NAMES, Example, Feature, SourcedTask
from asc_deploy.tasks.metrics import classification_metrics


class DroppedRowsWarning(UserWarning):
    """Rows of a data file that cannot be examples (an empty text) were left out, counted."""


class ClassificationTask(SourcedTask):
    family = "classification"

    def __init__(
        self,
        name: str,
        sources: dict[str, DataSource | None],
        text_column: str | tuple[str, ...],
        label_names: list[str],
        label_column: str | tuple[str, ...] = "label",
        text_pair_column: str | tuple[str, ...] | None = None,
        max_length: int = 128,
        primary_metric: str = "accuracy",
        skip_labels: tuple[Any, ...] = (),
        max_samples: dict[str, int | None] | None = None,
        data_note: str = "",
        missing_split_hint: dict[str, str] | None = None,
    ) -> None:
        if len(label_names) < 2:
            raise UserError(f"task {name}: declare at least two labels (task.labels)")
        super().__init__(name, sources, max_samples, missing_split_hint)
        # Each column is a name or candidate names (hub name first, then the GLUE file's name).
        self.text_column = _candidates(text_column)
        self.text_pair_column = _candidates(text_pair_column) if text_pair_column else None
        self.label_column = _candidates(label_column)
        self.label_names = list(label_names)
        self.max_length = max_length
        self.primary_metric = primary_metric
        self.skip_labels = skip_labels  # e.g. SNLI's -1: no annotator consensus, not a class
        self.data_note = data_note

    # -- data ---------------------------------------------------------------------------------
    def _load(self, split: Literal["train", "eval"]) -> None:
        src = self.source(split)
        self._cache[split] = self._to_examples(src.read(), src.describe())

    def _to_examples(self, records: list[Record], where: str) -> list[Example]:
        text = _pick(self.text_column, records[0], where, "text_column")
        pair = (
            _pick(self.text_pair_column, records[0], where, "text_pair_column")
            if self.text_pair_column
            else None
        )
        label = _pick(self.label_column, records[0], where, "label_column")
        examples, blank = [], []
        for i, row in enumerate(records):
            if row[label] in self.skip_labels:
                continue
            if not _text(row[text]).strip() or (pair and not _text(row[pair]).strip()):
                blank.append(i + 1)  # nothing to classify: it would count as an example
                continue
            example = {
                "id": str(row.get("idx", row.get("id", i))),
                "text": _text(row[text]),
                "label": self.label_index(row[label], f"{where} row {i + 1}"),
            }
            if pair:
                example["text_pair"] = _text(row[pair])
            examples.append(example)
        if blank:
            warnings.warn(
                f"{where}: dropped {len(blank)} of {len(records)} rows whose text is empty "
                f"(first: row {blank[0]})",
                DroppedRowsWarning,
                stacklevel=2,
            )
        if not examples:
            raise UserError(f"{where}: no labelled examples left (empty split)")
        return examples

    def label_index(self, value: Any, where: str = "") -> int:
        """Map a label given as a class index (int or digit string) or as a label name."""
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            index = int(value)
        elif isinstance(value, str) and value.strip() in self.label_names:
            index = self.label_names.index(value.strip())
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            index = int(value.strip())
        else:
            index = -1
        if not 0 <= index < len(self.label_names):
            raise UserError(
                f"{where}: label {value!r} is outside the declared set {self.label_names} "
                f"(names or indices 0..{len(self.label_names) - 1}); fix task.labels or the data"
            )
        return index

    # -- model inputs and outputs -------------------------------------------------------------
    def encode(
        self, tokenizer, examples: list[Example], for_training: bool = False
    ) -> list[Feature]:
        texts = [e["text"] for e in examples]
        pairs = [e["text_pair"] for e in examples] if self.text_pair_column else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        features = []
        for i, example in enumerate(examples):
            feature: Feature = {k: enc[k][i] for k in MODEL_INPUT_NAMES if k in enc}
            feature["example_index"] = i
            feature["labels"] = example["label"]
            features.append(feature)
        return features

    def predictions_from_outputs(
        self, examples: list[Example], features: list[Feature], outputs: list[dict[str, np.ndarray]]
    ) -> list[dict[str, Any]]:
        # One feature per example, so feature i belongs to examples[features[i]["example_index"]].
        records: list[dict[str, Any] | None] = [None] * len(examples)
        for feature, out in zip(features, outputs, strict=True):
            logits = np.asarray(out["logits"], dtype=np.float64)
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            example = examples[feature["example_index"]]
            pred = int(np.argmax(logits))
            records[feature["example_index"]] = {
                "id": example["id"],
                "prediction": pred,
                "gold": example["label"],
                "prediction_label": self.label_names[pred],
                "probabilities": [float(p) for p in probs],
            }
        return [r for r in records if r is not None]

    def compute_metrics(
        self, examples: list[Example], predictions: list[dict[str, Any]]
    ) -> dict[str, float]:
        golds = [p["gold"] for p in predictions]
        preds = [p["prediction"] for p in predictions]
        return classification_metrics(golds, preds, len(self.label_names))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _candidates(column: str | tuple[str, ...]) -> tuple[str, ...]:
    return (column,) if isinstance(column, str) else tuple(column)


def _pick(candidates: tuple[str, ...], row: Record, where: str, key: str) -> str:
    for name in candidates:
        if name in row:
            return name
    raise UserError(
        f"{where}: column {' / '.join(candidates)} not found "
        f"(columns: {', '.join(map(str, row))}); set task.{key}"
    )
