"""Extractive question answering (SQuAD 2.0 with unanswerable questions; SQuAD 1.1 without).

Preprocessing follows the reference `run_squad` / `run_qa` recipe: the question is cut to
`max_query_length` tokens, the context is split into overlapping windows (`max_length`, `stride`)
and every window is one feature carrying its offset mapping (None outside the context).
Postprocessing picks the best span over all windows (n-best start x end logits, spans at most
`max_answer_length` tokens) and, for SQuAD 2.0, answers "" when the null score (the [CLS] start +
end logits, the minimum over windows) beats the best span by more than `null_threshold`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Literal

import numpy as np

from asc_deploy.config import ArticleSplit, QAConfig
from asc_deploy.data.readers import DataSource, Record
from asc_deploy.errors import UserError
from asc_deploy.tasks.base import MODEL_INPUT_NAMES, Example, Feature, SourcedTask
from asc_deploy.tasks.squad_metric import best_null_threshold, squad_v2_scores

KEPT_N_BEST = 5  # span candidates written to the predictions file per question


class QuestionAnsweringTask(SourcedTask):
    family = "question-answering"
    primary_metric = "f1"
    label_names: list[str] = []

    def __init__(
        self,
        name: str,
        sources: dict[str, DataSource | None],
        qa: QAConfig | None = None,
        version_2: bool = True,
        article_split: ArticleSplit | None = None,
        max_samples: dict[str, int | None] | None = None,
        data_note: str = "",
        missing_split_hint: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name, sources, max_samples, missing_split_hint)
        self.qa = qa or QAConfig()
        self.version_2 = version_2
        # The official subsets: F1 alone cannot tell a weak reader from one that stopped reading.
        self.guarded_metrics = ("HasAns_f1", "NoAns_f1") if version_2 else ()
        self.article_split = article_split
        self._base_note = data_note

    @property
    def data_note(self) -> str:
        """Where the data comes from; with an article split, the articles/questions per side."""
        if self.article_split is None or "train" not in self._cache:
            return self._base_note
        parts = []
        for split in ("train", "eval"):
            examples = self._cache[split]
            titles = len({e["title"] for e in examples})
            parts.append(f"{split} {titles} articles / {len(examples)} questions")
        return f"{self._base_note} ({', '.join(parts)})"

    # -- data ---------------------------------------------------------------------------------
    def _load(self, split: str) -> None:
        if self.article_split is None:
            src = self.source(split)
            self._cache[split] = to_qa_examples(src.read(), src.describe())
            return
        # One file split by article: both parts come from the same source.
        src = self.source("eval")
        examples = to_qa_examples(src.read(), src.describe())
        train, evaluation = split_by_article(examples, self.article_split)
        self._cache["train"], self._cache["eval"] = train, evaluation

    def data_identity(
        self, split: Literal["train", "eval"], max_samples: int | None = None
    ) -> dict:
        identity = super().data_identity("eval" if self.article_split else split, max_samples)
        split_spec = self.article_split.model_dump() if self.article_split else None
        return {
            **identity,
            "split": split,
            "article_split": split_spec,
            "max_samples": self._limit(split, max_samples),
        }

    # -- model inputs -------------------------------------------------------------------------
    def encode(
        self, tokenizer, examples: list[Example], for_training: bool = False
    ) -> list[Feature]:
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(
                f"task {self.name}: QA needs a fast tokenizer (offset mappings); "
                "save the model with a tokenizer.json"
            )
        questions = self._truncated_questions(tokenizer, examples)
        enc = tokenizer(
            questions,
            [e["context"] for e in examples],
            truncation="only_second",
            max_length=self.qa.max_length,
            stride=self.qa.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        features = []
        for j, example_index in enumerate(enc["overflow_to_sample_mapping"]):
            sequence_ids = enc.sequence_ids(j)
            offsets = [
                list(o) if sequence_ids[k] == 1 else None
                for k, o in enumerate(enc["offset_mapping"][j])
            ]
            feature: Feature = {k: enc[k][j] for k in MODEL_INPUT_NAMES if k in enc}
            feature["example_index"] = int(example_index)
            feature["offset_mapping"] = offsets
            if for_training:
                start, end = _answer_positions(
                    examples[example_index], offsets, _cls_index(feature, tokenizer)
                )
                feature["start_positions"], feature["end_positions"] = start, end
            features.append(feature)
        return features

    def _truncated_questions(self, tokenizer, examples: list[Example]) -> list[str]:
        """Cut each question to max_query_length tokens and check the context still fits."""
        # Leading whitespace makes some tokenizers emit empty tokens that eat the budget.
        questions = [e["question"].lstrip() for e in examples]
        enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        limit = self.qa.max_query_length
        longest = 0
        for i, ids in enumerate(enc["input_ids"]):
            if len(ids) > limit:
                questions[i] = questions[i][: enc["offset_mapping"][i][limit - 1][1]]
            longest = max(longest, min(len(ids), limit))
        room = self.qa.max_length - longest - tokenizer.num_special_tokens_to_add(pair=True)
        if room <= 0:
            raise UserError(
                f"task {self.name}: qa.max_length {self.qa.max_length} is below the question "
                f"length ({longest} tokens + special tokens); raise qa.max_length or lower "
                "qa.max_query_length"
            )
        if self.qa.stride >= room:
            raise UserError(
                f"task {self.name}: qa.stride {self.qa.stride} must be below the {room} context "
                "tokens a window holds; lower qa.stride or raise qa.max_length"
            )
        return questions

    # -- outputs ------------------------------------------------------------------------------
    def predictions_from_outputs(
        self, examples: list[Example], features: list[Feature], outputs: list[dict[str, np.ndarray]]
    ) -> list[dict[str, Any]]:
        by_example: dict[int, list[int]] = defaultdict(list)
        for i, feature in enumerate(features):
            by_example[feature["example_index"]].append(i)
        records = []
        for example_index in sorted(by_example):
            example = examples[example_index]
            windows = [(features[i], outputs[i]) for i in by_example[example_index]]
            records.append(self._predict_one(example, windows))
        return records

    def _predict_one(self, example: Example, windows: list[tuple[Feature, dict]]) -> dict[str, Any]:
        null_score = None
        candidates: list[tuple[float, int, int]] = []
        for feature, out in windows:
            start_logits = np.asarray(out["start_logits"], dtype=np.float64)
            end_logits = np.asarray(out["end_logits"], dtype=np.float64)
            cls = _cls_index(feature)
            window_null = float(start_logits[cls] + end_logits[cls])
            null_score = window_null if null_score is None else min(null_score, window_null)
            candidates.extend(self._spans(feature["offset_mapping"], start_logits, end_logits))
        candidates.sort(key=lambda c: -c[0])
        context = example["context"]
        n_best = [
            {"text": context[s:e], "score": score} for score, s, e in candidates[:KEPT_N_BEST]
        ]
        best = n_best[0] if n_best else None
        best_text = best["text"] if best else ""
        diff = None if best is None else null_score - best["score"]
        if self.version_2:
            prediction = "" if diff is None or diff > self.qa.null_threshold else best_text
        else:
            prediction = best_text
        return {
            "id": example["id"],
            "prediction": prediction,
            "gold": list(example["answers"]["text"]),
            "best_span": best_text,
            "best_span_score": best["score"] if best else None,
            "null_score": null_score,
            "null_score_diff": diff,
            "n_best": n_best,
        }

    def _spans(self, offsets, start_logits, end_logits) -> list[tuple[float, int, int]]:
        n = self.qa.n_best
        starts = np.argsort(start_logits)[::-1][:n]
        ends = np.argsort(end_logits)[::-1][:n]
        spans = []
        for s in starts:
            for e in ends:
                if offsets[s] is None or offsets[e] is None:
                    continue
                if e < s or e - s + 1 > self.qa.max_answer_length:
                    continue
                spans.append((float(start_logits[s] + end_logits[e]), offsets[s][0], offsets[e][1]))
        return spans

    def compute_metrics(
        self, examples: list[Example], predictions: list[dict[str, Any]]
    ) -> dict[str, float]:
        golds = {p["id"]: p["gold"] for p in predictions}
        scores = squad_v2_scores(golds, {p["id"]: p["prediction"] for p in predictions})
        metrics = {k: v for k, v in scores.items() if not k.endswith("total")}
        if self.version_2 and self.qa.tune_null_threshold:
            spans = {p["id"]: p["best_span"] for p in predictions}
            diffs = {p["id"]: _finite(p["null_score_diff"]) for p in predictions}
            metrics.update(best_null_threshold(golds, spans, diffs))
        return metrics


def _finite(diff: float | None) -> float:
    # No valid span at all: the question can only be answered "" whatever the threshold.
    return float("inf") if diff is None else float(diff)


def _cls_index(feature: Feature, tokenizer=None) -> int:
    # BERT-style models put [CLS] first; the null answer points there.
    if tokenizer is not None and tokenizer.cls_token_id in feature["input_ids"]:
        return feature["input_ids"].index(tokenizer.cls_token_id)
    return 0


def _answer_positions(example: Example, offsets: list, cls_index: int) -> tuple[int, int]:
    """Token start/end of the first gold answer in this window; [CLS] when it is not inside."""
    answers = example["answers"]
    if not answers["text"]:
        return cls_index, cls_index
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    inside = [k for k, o in enumerate(offsets) if o is not None]
    first, last = inside[0], inside[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls_index, cls_index
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def to_qa_examples(records: list[Record], where: str) -> list[Example]:
    """Validate QA records (id, question, context, answers) into examples."""
    first = records[0]
    if "context" not in first or not any(r.get("context") for r in records):
        raise UserError(
            f"{where}: the QA data has no contexts; expected SQuAD JSON or a 'context' column"
        )
    missing = [c for c in ("question", "answers") if c not in first]
    if missing:
        raise UserError(f"{where}: QA column(s) {', '.join(missing)} not found")
    examples = []
    for i, r in enumerate(records):
        answers = r["answers"] or {"text": [], "answer_start": []}
        example = {
            "id": str(r.get("id", i)),
            "title": r.get("title", ""),
            "question": r["question"],
            "context": r["context"] or "",
            "answers": {
                "text": list(answers["text"]),
                "answer_start": [int(a) for a in answers["answer_start"]],
            },
        }
        _check_answers(example, where)
        examples.append(example)
    return examples


def _check_answers(example: Example, where: str) -> None:
    """Every answer must be the context's text at its answer_start: training on a span the
    context does not hold, and scoring against it, would go on without a word."""
    context, answers = example["context"], example["answers"]
    if len(answers["text"]) != len(answers["answer_start"]):
        raise UserError(
            f"{where}: question {example['id']}: {len(answers['text'])} answer texts but "
            f"{len(answers['answer_start'])} answer_start values; give one start per answer"
        )
    for text, start in zip(answers["text"], answers["answer_start"], strict=True):
        problem = None
        if start < 0:
            problem = f"answer_start {start} is negative"
        elif start + len(text) > len(context):
            problem = f"answer {text!r} at {start} runs beyond its context ({len(context)} chars)"
        elif context[start : start + len(text)] != text:
            problem = f"answer {text!r} is not at answer_start {start} of its context"
        if problem:
            raise UserError(f"{where}: question {example['id']}: {problem}; fix the answer")


def split_by_article(
    examples: list[Example], spec: ArticleSplit
) -> tuple[list[Example], list[Example]]:
    """Split by article title (never by question): a seeded share of the articles is held out."""
    titles = sorted({e["title"] for e in examples})
    if len(titles) < 2:
        raise UserError("article_split needs at least two articles (titles) in the QA file")
    random.Random(spec.seed).shuffle(titles)
    n_eval = min(len(titles) - 1, max(1, round(len(titles) * spec.eval_fraction)))
    held_out = set(titles[:n_eval])
    train = [e for e in examples if e["title"] not in held_out]
    evaluation = [e for e in examples if e["title"] in held_out]
    return train, evaluation
