"""Faithfulness measures against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asc_deploy.errors import UserError
from asc_deploy.measure import fidelity


def _records(preds, golds, probs=None):
    out = []
    for i, (p, g) in enumerate(zip(preds, golds, strict=True)):
        rec = {"id": f"ex{i}", "prediction": p, "gold": g}
        if probs is not None:
            rec["probabilities"] = probs[i]
        out.append(rec)
    return out


def test_perfectly_calibrated_case_has_zero_ece_and_known_brier():
    # Ten examples at confidence 0.8, eight of them right: accuracy 0.8 = confidence 0.8.
    probs = [[0.8, 0.2]] * 10
    gold = [0] * 8 + [1] * 2
    cal = fidelity.calibration(probs, gold)
    assert cal["ece"] == pytest.approx(0.0, abs=1e-12)
    assert cal["mce"] == pytest.approx(0.0, abs=1e-12)
    # right: 0.2² + 0.2² = 0.08; wrong: 0.8² + 0.8² = 1.28; mean = (8·0.08 + 2·1.28)/10.
    assert cal["brier"] == pytest.approx(0.32)
    counts = [b["count"] for b in cal["bins"]]
    assert counts == [0] * 8 + [10, 0]
    assert cal["bins"][8]["accuracy"] == pytest.approx(0.8)
    assert cal["bins"][0]["accuracy"] is None and cal["bins"][0]["confidence"] is None


def test_ece_mce_brier_on_two_examples():
    cal = fidelity.calibration([[0.9, 0.1], [0.6, 0.4]], [0, 1])
    # bin 9: acc 1, conf 0.9 (gap 0.1); bin 6: acc 0, conf 0.6 (gap 0.6).
    assert cal["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.6)
    assert cal["mce"] == pytest.approx(0.6)
    assert cal["brier"] == pytest.approx(((0.01 + 0.01) + (0.36 + 0.36)) / 2)


def test_confidence_one_falls_in_last_bin_and_bin_edges():
    cal = fidelity.calibration([[1.0, 0.0, 0.0], [0.5, 0.3, 0.2]], [0, 0])
    assert cal["bins"][9]["count"] == 1
    assert cal["bins"][5]["count"] == 1  # 0.5 is the lower edge of [0.5, 0.6)
    assert [b["lower"] for b in cal["bins"]] == pytest.approx([i / 10 for i in range(10)])


def test_calibration_rejects_bad_gold():
    with pytest.raises(UserError):
        fidelity.calibration([[0.5, 0.5]], [2])


def test_agreement_and_error_jaccard():
    gold = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    ref_pred = list(gold)
    cand_pred = list(gold)
    for i in (2, 3, 5):
        ref_pred[i] = 1 - gold[i]
    for i in (3, 5, 7, 8):
        cand_pred[i] = 1 - gold[i]
    ref, cand = _records(ref_pred, gold), _records(cand_pred, gold)
    # Predictions differ on 2, 7, 8 (both wrong on 3 and 5, so the same wrong label there).
    assert fidelity.prediction_agreement(ref, cand) == pytest.approx(0.7)
    # Errors {2,3,5} vs {3,5,7,8}: 2 shared of 5.
    assert fidelity.error_jaccard(ref, cand) == pytest.approx(0.4)


def test_error_jaccard_is_one_when_nobody_errs_and_uses_correct_key():
    ref = _records(["a", "b"], ["a", "b"])
    assert fidelity.error_jaccard(ref, ref) == 1.0
    # QA: the caller's EM wins over string equality.
    qa_ref = [
        {"id": "q1", "prediction": "Paris", "gold": ["paris"], "correct": 1},
        {"id": "q2", "prediction": "", "gold": [], "correct": None},
    ]
    qa_cand = [
        {"id": "q1", "prediction": "London", "gold": ["paris"], "correct": 0},
        {"id": "q2", "prediction": "x", "gold": []},
    ]
    assert fidelity.error_ids(qa_ref) == set()  # q2: empty gold and empty prediction
    assert fidelity.error_ids(qa_cand) == {"q1", "q2"}
    assert fidelity.error_jaccard(qa_ref, qa_cand) == 0.0


def test_records_must_cover_the_same_ids():
    ref = _records([0, 1], [0, 1])
    cand = _records([0], [0])
    with pytest.raises(UserError, match="different examples"):
        fidelity.prediction_agreement(ref, cand)


def _angles(degrees):
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_knn_agreement_on_obvious_neighbours():
    # Reference: a=0°, b=10°, c=90°, d=100°; candidate swaps where b and c sit.
    ref = _angles([0, 10, 90, 100])
    cand = _angles([0, 90, 10, 100])
    scores, notes = fidelity.knn_agreement(ref, cand, ks=(1, 2, 4))
    # K=1: a→b vs a→c, b→a vs b→d, ... every neighbour differs.
    assert scores["1"] == pytest.approx(0.0)
    # K=2: a {b,c}={c,b} 1; b {a,c} vs {d,c} 1/3; c {d,b} vs {a,b} 1/3; d {c,b}={b,c} 1.
    assert scores["2"] == pytest.approx((1 + 1 / 3 + 1 / 3 + 1) / 4)
    assert "4" not in scores and len(notes) == 1 and "K=4" in notes[0]


def test_knn_agreement_is_one_under_rotation_and_scaling():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(60, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    cand = 3.0 * ref @ q  # cosine similarities are unchanged
    scores, notes = fidelity.knn_agreement(ref, cand)
    assert scores == pytest.approx({"10": 1.0, "20": 1.0, "50": 1.0})
    assert notes == []


def test_nearest_neighbours_chunking_and_self_exclusion():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(25, 5))
    whole = fidelity.nearest_neighbours(x, 4)
    chunked = fidelity.nearest_neighbours(x, 4, chunk=3)
    assert np.array_equal(whole, chunked)
    assert not (whole == np.arange(25)[:, None]).any()
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
        x / np.linalg.norm(x, axis=1)[:, None]
    ).T
    np.fill_diagonal(sims, -math.inf)
    assert np.array_equal(whole[:, 0], sims.argmax(axis=1))


def test_compare_predictions_aligns_by_id():
    rng = np.random.default_rng(2)
    n = 30
    gold = rng.integers(0, 3, size=n).tolist()
    ref_probs = rng.dirichlet(np.ones(3), size=n)
    cand_probs = rng.dirichlet(np.ones(3), size=n)
    ref = _records(ref_probs.argmax(1).tolist(), gold, ref_probs.tolist())
    cand = _records(cand_probs.argmax(1).tolist(), gold, cand_probs.tolist())
    ref_cls, cand_cls = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))
    straight = fidelity.compare_predictions(ref, cand, ref_cls, cand_cls)
    perm = rng.permutation(n)
    shuffled = fidelity.compare_predictions(ref, [cand[i] for i in perm], ref_cls, cand_cls[perm])
    assert shuffled == straight
    assert straight["examples"] == n
    assert set(straight["knn_agreement"]) == {"10", "20"}  # K=50 >= 30 examples: skipped
    assert len(straight["notes"]) == 1
    expected = fidelity.calibration(cand_probs, gold)
    assert straight["calibration"]["ece"] == pytest.approx(expected["ece"])
    self_cmp = fidelity.compare_predictions(ref, ref, ref_cls, ref_cls)
    assert self_cmp["agreement"] == 1.0 and self_cmp["error_jaccard"] == 1.0
    assert self_cmp["knn_agreement"] == {"10": 1.0, "20": 1.0}


def test_gold_label_names_are_mapped():
    recs = [
        {"id": "1", "prediction": "pos", "gold": "pos", "probabilities": [0.3, 0.7]},
        {"id": "2", "prediction": "neg", "gold": "pos", "probabilities": [0.6, 0.4]},
    ]
    assert fidelity.gold_indices(recs) == [1, 1]
    assert fidelity.gold_indices(recs, ["neg", "pos"]) == [1, 1]
    cal = fidelity.records_calibration(recs)
    assert cal["brier"] == pytest.approx(((0.09 + 0.09) + (0.36 + 0.36)) / 2)
    assert fidelity.records_calibration([{"id": "q", "prediction": "", "gold": []}]) is None
