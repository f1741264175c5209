"""Extractive QA: overflow windows, gold positions, postprocessing, article split, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asc_deploy.config import ArticleSplit, QAConfig, TaskConfig
from asc_deploy.errors import UserError
from asc_deploy.tasks.presets import build_task

CONTEXT = (
    "the king was born in paris . the queen was born in london . "
    "the war ended in the year of peace . "
    "the river of the city is long and the capital of france is paris . "
    "music and love never ended ."
)


def _squad_file(tmp_path, articles):
    data = {"version": "v2.0", "data": []}
    for title, qas in articles.items():
        paragraph = {"context": CONTEXT, "qas": []}
        for qid, question, answer in qas:
            answers = [{"text": answer, "answer_start": CONTEXT.index(answer)}] if answer else []
            paragraph["qas"].append(
                {"id": qid, "question": question, "answers": answers, "is_impossible": not answer}
            )
        data["data"].append({"title": title, "paragraphs": [paragraph]})
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    return path


QAS = {
    "A": [
        ("q1", "where was the king born ?", "paris"),
        ("q2", "who was born in london ?", "the queen"),
    ],
    "B": [("q3", "what is the capital of france ?", "paris ."), ("q4", "who died ?", None)],
    "C": [("q5", "what never ended ?", "music and love")],
}


def _qa_task(tmp_path, **qa):
    path = _squad_file(tmp_path, QAS)
    return build_task(
        TaskConfig(
            family="question-answering",
            train_file=str(path),
            eval_file=str(path),
            qa=QAConfig(**qa),
        )
    )


@pytest.fixture
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def _oracle_outputs(features):
    outputs = []
    for f in features:
        n = len(f["input_ids"])
        start, end = np.full(n, -5.0), np.full(n, -5.0)
        start[f["start_positions"]] += 10
        end[f["end_positions"]] += 10
        outputs.append({"start_logits": start, "end_logits": end})
    return outputs


def test_overflow_windows_and_gold_positions(tmp_path, tokenizer):
    task = _qa_task(tmp_path, max_length=48, stride=16, max_query_length=16)
    examples = task.load_examples("train")
    features = task.encode(tokenizer, examples, for_training=True)
    assert len(features) > len(examples)  # the context needs several windows
    for f in features:
        assert len(f["input_ids"]) <= 48
        example = examples[f["example_index"]]
        s, e = f["start_positions"], f["end_positions"]
        if (s, e) == (0, 0):
            continue  # answer not in this window (or unanswerable): [CLS]
        span = example["context"][f["offset_mapping"][s][0] : f["offset_mapping"][e][1]]
        assert span == example["answers"]["text"][0]
    unanswerable = [f for f in features if examples[f["example_index"]]["id"] == "q4"]
    assert all((f["start_positions"], f["end_positions"]) == (0, 0) for f in unanswerable)
    # Offsets are None outside the context (question and special tokens).
    assert features[0]["offset_mapping"][0] is None


def test_oracle_logits_score_100(tmp_path, tokenizer):
    task = _qa_task(tmp_path, max_length=48, stride=16, max_query_length=16)
    examples = task.load_examples("eval")
    features = task.encode(tokenizer, examples, for_training=True)
    predictions = task.predictions_from_outputs(examples, features, _oracle_outputs(features))
    assert [p["prediction"] for p in predictions] == [
        "paris",
        "the queen",
        "paris .",
        "",
        "music and love",
    ]
    metrics = task.compute_metrics(examples, predictions)
    assert metrics["exact"] == 100.0 and metrics["f1"] == 100.0
    assert metrics["HasAns_exact"] == 100.0 and metrics["NoAns_exact"] == 100.0


def _one_window_outputs(feature, null, span):
    n = len(feature["input_ids"])
    start, end = np.full(n, -10.0), np.full(n, -10.0)
    start[0] = end[0] = null / 2
    first = next(i for i, o in enumerate(feature["offset_mapping"]) if o is not None)
    start[first] = end[first + 1] = span / 2
    return {"start_logits": start, "end_logits": end}


@pytest.mark.parametrize(("threshold", "answered"), [(0.0, False), (2.0, True)])
def test_null_threshold(tmp_path, tokenizer, threshold, answered):
    task = _qa_task(tmp_path, null_threshold=threshold)
    examples = task.load_examples("eval", max_samples=1)
    features = task.encode(tokenizer, examples)
    assert len(features) == 1
    record = task.predictions_from_outputs(
        examples, features, [_one_window_outputs(features[0], 5.0, 4.0)]
    )[0]
    assert record["null_score_diff"] == pytest.approx(1.0)
    assert (record["prediction"] != "") == answered
    assert record["best_span"] and record["n_best"][0]["score"] == pytest.approx(4.0)


def test_max_answer_length_limits_spans(tmp_path, tokenizer):
    task = _qa_task(tmp_path, max_answer_length=3)
    examples = task.load_examples("eval", max_samples=1)
    features = task.encode(tokenizer, examples)
    n = len(features[0]["input_ids"])
    start, end = np.zeros(n), np.zeros(n)
    first = next(i for i, o in enumerate(features[0]["offset_mapping"]) if o is not None)
    start[first], end[first + 10] = 10.0, 10.0  # best pair is 11 tokens long: not allowed
    record = task.predictions_from_outputs(
        examples, features, [{"start_logits": start, "end_logits": end}]
    )[0]
    for candidate in record["n_best"]:
        assert len(tokenizer(candidate["text"], add_special_tokens=False)["input_ids"]) <= 3


def test_tuned_threshold_is_reported_separately(tmp_path, tokenizer):
    task = _qa_task(tmp_path, tune_null_threshold=True)
    examples = task.load_examples("eval")
    features = task.encode(tokenizer, examples, for_training=True)
    predictions = task.predictions_from_outputs(examples, features, _oracle_outputs(features))
    metrics = task.compute_metrics(examples, predictions)
    assert metrics["best_f1"] >= metrics["f1"] and "best_f1_thresh" in metrics


def test_article_split_never_splits_an_article(shared_data):
    task = build_task(
        TaskConfig(
            preset="squad_v2", data_dir=shared_data, article_split=ArticleSplit(eval_fraction=0.2)
        )
    )
    train, evaluation = task.load_examples("train"), task.load_examples("eval")
    assert len(train) + len(evaluation) == 11873
    assert not {e["title"] for e in train} & {e["title"] for e in evaluation}
    assert len({e["title"] for e in evaluation}) == 7  # 20% of 35 articles
    assert "split by article" in task.data_note and "seed 42" in task.data_note
    assert "eval 7 articles / " in task.data_note
    again = build_task(
        TaskConfig(preset="squad_v2", data_dir=shared_data, article_split=ArticleSplit())
    )
    assert [e["id"] for e in again.load_examples("eval")] == [e["id"] for e in evaluation]


def test_squad_v2_offline_train_needs_article_split(shared_data):
    task = build_task(TaskConfig(preset="squad_v2", data_dir=shared_data))
    assert len(task.load_examples("eval")) == 11873
    with pytest.raises(UserError, match="article_split"):
        task.load_examples("train")


def test_max_length_below_question_length(tmp_path, tokenizer):
    task = _qa_task(tmp_path, max_length=8, stride=2, max_query_length=64)
    with pytest.raises(UserError, match="below the question length"):
        task.encode(tokenizer, task.load_examples("eval"))


def test_file_without_contexts(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(
        json.dumps({"id": "1", "question": "why?", "answers": {"text": [], "answer_start": []}})
        + "\n"
    )
    task = build_task(TaskConfig(family="question-answering", eval_file=str(path)))
    with pytest.raises(UserError, match="no contexts"):
        task.load_examples("eval")
