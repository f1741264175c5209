"""Paired statistics against hand-worked answers: McNemar, bootstrap intervals, seeds, QA F1."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asc_deploy.errors import UserError
from asc_deploy.measure.statistics import (
    compare_prediction_files,
    compare_predictions,
    compare_scores,
    examples_for,
    mcnemar_exact,
    minimal_detectable_drop,
    paired_bootstrap_bounds,
    per_example_scores,
    seed_summary,
)
from asc_deploy.tasks.evaluation import save_predictions


def _table(both_right: int, b: int, c: int, both_wrong: int) -> tuple[list[bool], list[bool]]:
    """Paired outcomes with the given 2x2 counts (b: only the reference right, c: only other)."""
    ref = [True] * both_right + [True] * b + [False] * c + [False] * both_wrong
    other = [True] * both_right + [False] * b + [True] * c + [False] * both_wrong
    return ref, other


def _records(outcomes: list[bool], ids=None) -> list[dict]:
    ids = ids or [f"q{i}" for i in range(len(outcomes))]
    return [
        {"id": i, "prediction": 1 if right else 0, "gold": 1}
        for i, right in zip(ids, outcomes, strict=True)
    ]


def test_mcnemar_exact_on_a_known_table():
    ref, other = _table(30, 15, 5, 10)
    result = mcnemar_exact(ref, other)
    # Two-sided exact binomial: 2 * P(X <= 5 | n=20, p=1/2) = 2 * 21700 / 2**20.
    assert (result.b, result.c) == (15, 5)
    assert result.p_value == pytest.approx(0.04138946533203125, rel=1e-12)
    assert mcnemar_exact(*_table(8, 0, 0, 2)).p_value == 1.0  # no discordant pairs


def test_bootstrap_interval_collapses_when_every_difference_is_equal():
    reference = np.array([10.0, 40.0, 70.0, 20.0, 90.0])
    low, high, ni_low = paired_bootstrap_bounds(reference, reference + 2.5)
    assert low == high == ni_low == pytest.approx(2.5)


def test_bootstrap_interval_of_a_symmetric_case_holds_zero():
    ref, other = _table(40, 30, 30, 0)
    low, high, ni_low = paired_bootstrap_bounds(100.0 * np.array(ref), 100.0 * np.array(other))
    # Half the discordant pairs gain 100, half lose 100: se = 100 * sqrt(60/100) / 10 = 7.75
    # points, so a 95% interval spans about +-1.96 se = +-15.2, and the one-sided 95% lower
    # bound sits at about -1.645 se = -12.7.
    assert low < 0 < high
    assert -19 < low < -11 and 11 < high < 19
    assert low < ni_low < 0 and -15 < ni_low < -10.5


def test_bootstrap_interval_is_seeded():
    rng = np.random.default_rng(1)
    reference = 100 * rng.random(50)
    other = reference + rng.normal(1.0, 5.0, 50)
    bounds = paired_bootstrap_bounds(reference, other, seed=3)
    assert paired_bootstrap_bounds(reference, other, seed=3) == bounds
    assert paired_bootstrap_bounds(reference, other, seed=4) != bounds


def test_one_sided_bound_is_the_lower_end_of_the_two_sided_90_percent_interval():
    """Read off the same bootstrap distribution as the 95% interval: the same number a fresh
    90% bootstrap with the same seed gives."""
    rng = np.random.default_rng(2)
    reference = 100.0 * (rng.random(300) < 0.8)
    other = np.where(rng.random(300) < 0.1, 100.0 - reference, reference)
    _, _, ni_low = paired_bootstrap_bounds(reference, other)
    low90, _, _ = paired_bootstrap_bounds(reference, other, confidence=0.90)
    assert ni_low == low90


def _known_drop(n: int, drop: float, disagreement: float) -> tuple[list[bool], list[bool]]:
    """n paired outcomes on which the other model is `drop` points worse and differs from the
    reference on a `disagreement` share (b - c = drop% of n, b + c = disagreement of n, both
    whole numbers at the n asked for); the reference is right on 80%."""
    b, c = n * (disagreement + drop / 100) / 2, n * (disagreement - drop / 100) / 2
    assert b == pytest.approx(round(b)) and c == pytest.approx(round(c)), n
    b, c = round(b), round(c)
    return _table(round(0.8 * n) - b, b, c, n - round(0.8 * n) - c)


def _bound(n: int, drop: float, disagreement: float):
    ref, other = _known_drop(n, drop, disagreement)
    return compare_predictions(_records(ref), _records(other), "classification")["accuracy"]


def test_a_half_point_drop_is_shown_within_one_point_only_on_a_large_enough_set():
    """A true 0.5-point drop with 5% disagreement: the one-sided bound, delta - 1.645 se with
    se = 100 * sqrt(0.05 / n), clears -1 once 1.645 se < 0.5, about 5,400 examples; the power
    formula says so, and the bootstrap agrees on either side of it."""
    rms = 100 * np.sqrt(0.05)
    needed = examples_for(0.5, rms)  # the n at which 1.645 se = 1 - 0.5
    assert 5300 < needed < 5500
    # About half and twice that, at sizes where the counts are whole (multiples of 400).
    small, large = _bound(2400, 0.5, 0.05), _bound(11200, 0.5, 0.05)
    assert small.delta == pytest.approx(-0.5) and large.delta == pytest.approx(-0.5)
    assert small.ni_low < -1 < large.ni_low < small.delta
    assert small.rms_difference == pytest.approx(rms, rel=1e-3)
    assert minimal_detectable_drop(small.rms_difference, small.n) > 0.5
    assert minimal_detectable_drop(large.rms_difference, large.n) < 0.5
    # The point estimate is within 1 point at either size: only the bound tells them apart.
    assert small.delta > -1 and large.delta > -1


@pytest.mark.parametrize("n", [1000, 20000])
def test_a_two_point_drop_is_never_within_one_point(n):
    result = _bound(n, 2.0, 0.05)
    assert result.delta == pytest.approx(-2.0)
    assert result.ni_low < result.delta < -1


def test_minimal_detectable_drop_is_1_645_standard_errors():
    # 5% disagreement on 872 examples (SST-2's dev set): 1.645 * 100 * sqrt(0.05 / 872) points.
    assert minimal_detectable_drop(100 * np.sqrt(0.05), 872) == pytest.approx(1.2456, abs=1e-4)
    assert examples_for(1.0, 100 * np.sqrt(0.05)) == 1353  # (1.645 * 22.36 / 1)^2, rounded up


def test_classification_comparison_significant_and_not():
    ref, other = _table(30, 15, 5, 10)
    result = compare_predictions(_records(ref), _records(other), "classification")["accuracy"]
    assert result.n == 60 and result.reference == pytest.approx(75.0)
    assert result.delta == pytest.approx(-100 * 10 / 60)
    assert result.ci_low < result.delta < result.ci_high < 0
    assert result.p_value == pytest.approx(0.04138946533203125)
    assert result.significant and result.phrase().startswith("\u221216.7 [\u2212")
    assert result.phrase().endswith("], significant (McNemar p = 0.041)")
    same = compare_predictions(_records(ref), _records(ref), "classification")["accuracy"]
    assert (same.delta, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert same.phrase() == "0.0 [0.0, 0.0], not significant (McNemar p = 1.00)"
    # The interval and McNemar must both agree: 5 vs 0 discordant pairs of 100 gives an
    # interval below 0 but p = 2 / 2**5 = 0.0625, so not significant.
    few = compare_scores(
        "accuracy", *[100.0 * np.array(x) for x in _table(95, 5, 0, 0)], with_mcnemar=True
    )
    assert few.ci_high < 0 and few.p_value == pytest.approx(0.0625) and not few.significant


def test_records_align_by_id_and_must_cover_the_same_examples():
    ref, other = _table(5, 2, 1, 2)
    records = _records(other)
    shuffled = records[::-1]
    a = compare_predictions(_records(ref), records, "classification")["accuracy"]
    b = compare_predictions(_records(ref), shuffled, "classification")["accuracy"]
    assert a == b
    with pytest.raises(UserError, match="different examples"):
        compare_predictions(_records(ref), records[:-1], "classification")
    with pytest.raises(UserError, match="at least 2 examples"):
        compare_predictions(_records([True]), _records([False]), "classification")


QA_REFERENCE = [
    {"id": "a", "prediction": "red fox jumps", "gold": ["red fox jumps"]},
    {"id": "b", "prediction": "", "gold": []},
    {"id": "c", "prediction": "Paris", "gold": ["Paris", "in Paris"]},
    {"id": "d", "prediction": "wrong", "gold": ["the king"]},
]
QA_OTHER = [
    {"id": "d", "prediction": "king", "gold": ["the king"]},  # EM after normalisation: 1, F1 1
    {"id": "c", "prediction": "city of Paris", "gold": ["Paris", "in Paris"]},  # F1 2*(1/3)/(4/3)
    {"id": "b", "prediction": "fox", "gold": []},  # answered an unanswerable question: 0
    {"id": "a", "prediction": "red fox", "gold": ["red fox jumps"]},  # P 1, R 2/3: F1 0.8
]


def test_qa_per_example_exact_and_f1():
    scores = per_example_scores(QA_OTHER, "question-answering")
    assert scores["exact"].tolist() == [100.0, 0.0, 0.0, 0.0]
    assert scores["f1"] == pytest.approx([100.0, 50.0, 0.0, 80.0])
    result = compare_predictions(QA_REFERENCE, QA_OTHER, "question-answering")
    assert set(result) == {"exact", "f1"}
    f1 = result["f1"]
    assert f1.reference == pytest.approx(75.0) and f1.other == pytest.approx(57.5)
    assert f1.delta == pytest.approx(-17.5) and f1.ci_low <= f1.delta <= f1.ci_high
    assert f1.p_value is None and f1.discordant is None and "McNemar" not in f1.phrase()
    assert result["exact"].delta == pytest.approx(-50.0)


def test_qa_2_subsets_are_scored_over_their_own_questions_as_the_official_scorer_does():
    from asc_deploy.tasks.squad_metric import squad_v2_scores

    gold = [["Paris"], [], ["blue sky"], [""], ["1990"]]  # [] and [""]: unanswerable
    reference = ["Paris", "", "sky", "", "1991"]
    other = ["Paris", "Lyon", "blue sky", "", ""]  # answers one it should abstain on

    def records(predictions):
        return [
            {"id": f"q{i}", "prediction": p, "gold": g}
            for i, (p, g) in enumerate(zip(predictions, gold, strict=True))
        ]

    scores = per_example_scores(records(other), "question-answering")
    assert scores["HasAns_f1"].tolist() == [100.0, 100.0, 0.0]
    assert scores["NoAns_exact"].tolist() == [0.0, 100.0]
    official = squad_v2_scores(
        {f"q{i}": g for i, g in enumerate(gold)}, {f"q{i}": p for i, p in enumerate(other)}
    )
    for metric in ("HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"):
        assert scores[metric].mean() == pytest.approx(official[metric]), metric
    result = compare_predictions(records(reference), records(other), "question-answering")
    assert result["NoAns_f1"].n == 2 and result["NoAns_f1"].delta == pytest.approx(-50.0)
    assert result["HasAns_f1"].n == 3
    assert result["HasAns_f1"].delta == pytest.approx((200 - (100 + 200 / 3)) / 3)
    # One kind of question only (SQuAD 1.1): no subsets, they would repeat the totals.
    answerable = records(other)[::2]
    assert set(per_example_scores(answerable, "question-answering")) == {"exact", "f1"}


def test_comparison_is_json_and_reads_prediction_files(tmp_path):
    ref, other = _table(30, 15, 5, 10)
    save_predictions(tmp_path / "ref.jsonl", _records(ref))
    save_predictions(tmp_path / "other.jsonl", _records(other))
    result = compare_prediction_files(
        tmp_path / "ref.jsonl", tmp_path / "other.jsonl", "classification"
    )
    record = json.loads(json.dumps(result["accuracy"].to_dict()))
    assert record["discordant"] == {"b": 15, "c": 5, "p_value": pytest.approx(0.0413894653)}
    assert record["significant"] is True and record["phrase"].endswith("(McNemar p = 0.041)")
    with pytest.raises(UserError, match="not found"):
        compare_prediction_files(
            tmp_path / "none.jsonl", tmp_path / "other.jsonl", "classification"
        )


def test_seed_summary_uses_the_sample_standard_deviation():
    summary = seed_summary([80.0, 82.0, 84.0])
    assert (summary.mean, summary.sd, summary.n) == (82.0, 2.0, 3)
    assert summary.phrase() == "82.0 \u00b1 2.0 (3 seeds)"
    one = seed_summary([81.25])
    assert one.sd is None and one.phrase() == "81.2 (1 seed)"
    assert json.loads(json.dumps(one.to_dict()))["values"] == [81.25]
    with pytest.raises(UserError, match="no seed results"):
        seed_summary([])
