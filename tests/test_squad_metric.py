"""The SQuAD 2.0 metric reproduces the official scorer."""

from __future__ import annotations

import json

import pytest

from asc_deploy.data.readers import read_file
from asc_deploy.tasks.squad_metric import (
    best_null_threshold,
    exact_score,
    f1_score,
    normalize_answer,
    squad_v2_scores,
)


def test_official_scorer_numbers_on_bidaf_elmo(shared_data):
    rows = read_file(shared_data / "squad_v2" / "dev-v2.0.json")
    golds = {r["id"]: r["answers"]["text"] for r in rows}
    predictions = json.loads(
        (shared_data / "squad_v2" / "predictions" / "bidaf_elmo.json").read_text()
    )
    scores = squad_v2_scores(golds, predictions)
    assert round(scores["exact"], 2) == 65.70
    assert round(scores["f1"], 2) == 67.88
    assert scores["total"] == 11873
    assert scores["HasAns_total"] == 5928 and scores["NoAns_total"] == 5945
    # Overall is the question-weighted mean of the two parts.
    mixed = (scores["HasAns_f1"] * 5928 + scores["NoAns_f1"] * 5945) / 11873
    assert mixed == pytest.approx(scores["f1"])


def test_normalisation():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple and a pear") == "apple and pear"
    assert exact_score("the Normans", "Normans.") == 1
    assert f1_score("", "") == 1.0 and f1_score("", "x") == 0.0 and f1_score("x", "") == 0.0
    # gold "in the 10th century" -> [in, 10th, century]; prediction [10th, century]
    assert f1_score("in the 10th century", "10th century") == pytest.approx(
        2 * 1 * (2 / 3) / (1 + 2 / 3)
    )


def test_max_over_gold_answers_and_missing_predictions():
    golds = {"a": ["France", "the France"], "b": [], "c": ["x y"]}
    scores = squad_v2_scores(golds, {"a": "france", "b": ""})  # "c" unanswered -> ""
    assert scores["exact"] == pytest.approx(200 / 3)
    assert scores["NoAns_exact"] == 100.0 and scores["HasAns_exact"] == 50.0


def test_best_threshold_follows_official_rule():
    golds = {"a": ["Paris"], "b": [], "c": ["Rome"]}
    spans = {"a": "Paris", "b": "Berlin", "c": "Madrid"}
    diffs = {"a": -3.0, "b": 1.0, "c": 2.0}
    best = best_null_threshold(golds, spans, diffs)
    # Answer "a" only (threshold -3): a right, b null right, c null wrong -> 2/3.
    assert best["best_exact"] == pytest.approx(200 / 3)
    assert best["best_exact_thresh"] == -3.0
