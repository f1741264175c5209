"""Is the compressed model still the same model? Faithfulness measures against a reference.

Pure numpy, so it runs wherever the prediction records and [CLS] vectors are (no torch).
Definitions follow `../shared/docs/asc-method.md`:

- prediction agreement: share of examples where both models predict the same label/answer;
- error-set Jaccard: |Ea ∩ Eb| / |Ea ∪ Eb| over the ids each model gets wrong (QA: EM = 0).
  When neither model gets anything wrong the two error sets are identical (both empty), so the
  value is defined as 1.0 rather than 0/0;
- calibration: confidence = max softmax probability, 10 equal-width bins on [0, 1] (a confidence
  of exactly 1.0 falls in the last bin), ECE = Σ (n_b/N)|acc_b − conf_b|, MCE = the largest gap
  over non-empty bins, Brier = mean over examples of Σ_c (p_c − y_c)²;
- kNN representation agreement: for each example the K nearest neighbours (cosine similarity,
  the point itself excluded) of its final [CLS] vector in each model's space; mean Jaccard of
  the two neighbour sets. K values with K >= N are skipped with a note.

Prediction records are dicts with "id", "prediction", "gold" and, for classification,
"probabilities". A record may carry "correct" (bool or EM 0/1) computed by the caller, which wins
over comparing prediction with gold (QA callers should pass it: EM normalises answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from asc_deploy.errors import UserError

DEFAULT_KS = (10, 20, 50)
NUM_BINS = 10


def is_correct(record: dict[str, Any]) -> bool:
    """The caller's "correct" when given; else prediction == gold (gold list: any answer)."""
    if record.get("correct") is not None:
        return bool(record["correct"])
    gold = record["gold"]
    if isinstance(gold, list | tuple):
        # SQuAD-style gold: several acceptable answers, an empty list means "no answer".
        return record["prediction"] in gold if gold else record["prediction"] in ("", None)
    return record["prediction"] == gold


def align(
    reference: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int], list[int]]:
    """Pair records by id; returns both lists in reference order plus each side's row indices."""
    ref_pos = {r["id"]: i for i, r in enumerate(reference)}
    cand_pos = {r["id"]: i for i, r in enumerate(candidate)}
    if len(ref_pos) != len(reference) or len(cand_pos) != len(candidate):
        raise UserError("prediction records repeat an id; each example must appear once")
    if ref_pos.keys() != cand_pos.keys():
        missing = len(ref_pos.keys() ^ cand_pos.keys())
        raise UserError(
            f"reference and candidate predictions cover different examples ({missing} ids "
            "in only one); evaluate both models on the same evaluation set"
        )
    ids = [r["id"] for r in reference]
    ref_idx = [ref_pos[i] for i in ids]
    cand_idx = [cand_pos[i] for i in ids]
    return list(reference), [candidate[j] for j in cand_idx], ref_idx, cand_idx


def prediction_agreement(
    reference: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]]
) -> float:
    """Share of examples (matched by id) where both models predict the same thing."""
    ref, cand, _, _ = align(reference, candidate)
    if not ref:
        raise UserError("no prediction records to compare")
    same = sum(a["prediction"] == b["prediction"] for a, b in zip(ref, cand, strict=True))
    return same / len(ref)


def error_ids(records: Sequence[dict[str, Any]]) -> set[Any]:
    """Ids of the examples a model gets wrong."""
    return {r["id"] for r in records if not is_correct(r)}


def jaccard(a: set[Any], b: set[Any]) -> float:
    """|a ∩ b| / |a ∪ b|, and 1.0 when both are empty (identical, empty sets)."""
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def error_jaccard(
    reference: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]]
) -> float:
    """Jaccard of the two models' error sets over the same examples."""
    ref, cand, _, _ = align(reference, candidate)
    return jaccard(error_ids(ref), error_ids(cand))


def calibration(
    probabilities: np.ndarray | Sequence[Sequence[float]],
    gold: np.ndarray | Sequence[int],
    num_bins: int = NUM_BINS,
) -> dict[str, Any]:
    """ECE, MCE, Brier and the reliability-diagram bins from class probabilities + gold indices."""
    probs = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(gold, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels) or len(labels) == 0:
        raise UserError("calibration needs an (N, classes) probability array and N gold labels")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise UserError("a gold label index is outside the probability columns")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    # floor(conf * B), with conf == 1.0 folded into the last bin.
    which = np.minimum((confidence * num_bins).astype(np.int64), num_bins - 1)
    bins, ece, mce = [], 0.0, 0.0
    for b in range(num_bins):
        mask = which == b
        count = int(mask.sum())
        acc = float(correct[mask].mean()) if count else None
        conf = float(confidence[mask].mean()) if count else None
        if count:
            gap = abs(acc - conf)
            ece += count / len(labels) * gap
            mce = max(mce, gap)
        bins.append(
            {
                "lower": b / num_bins,
                "upper": (b + 1) / num_bins,
                "count": count,
                "accuracy": acc,
                "confidence": conf,
            }
        )
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    brier = float(((probs - onehot) ** 2).sum(axis=1).mean())
    return {"ece": float(ece), "mce": float(mce), "brier": brier, "bins": bins}


def gold_indices(
    records: Sequence[dict[str, Any]], label_names: Sequence[str] | None = None
) -> list[int]:
    """Gold as class indices: ints as they are; names via `label_names`, else inferred.

    Inference uses the records themselves: a record's prediction is the label at the argmax
    of its probabilities, which maps names to indices for every label the model ever predicts.
    """
    golds = [r["gold"] for r in records]
    if all(isinstance(g, int | np.integer) and not isinstance(g, bool) for g in golds):
        return [int(g) for g in golds]
    mapping = {name: i for i, name in enumerate(label_names)} if label_names else {}
    if not mapping:
        for r in records:
            mapping.setdefault(r["prediction"], int(np.argmax(r["probabilities"])))
    unknown = {g for g in golds if g not in mapping}
    if unknown:
        raise UserError(
            f"gold labels {sorted(map(str, unknown))[:3]} have no class index; pass label_names"
        )
    return [mapping[g] for g in golds]


def records_calibration(
    records: Sequence[dict[str, Any]], label_names: Sequence[str] | None = None
) -> dict[str, Any] | None:
    """Calibration of one model's records, or None when they carry no probabilities (QA)."""
    if not records or any(r.get("probabilities") is None for r in records):
        return None
    probs = [r["probabilities"] for r in records]
    return calibration(probs, gold_indices(records, label_names))


def nearest_neighbours(vectors: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """(N, k) indices of each row's k most cosine-similar other rows, most similar first.

    Computed in row chunks so 10k examples never build a full N x N matrix at once.
    """
    x = np.asarray(vectors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), chunk):
        sims = x[start : start + chunk] @ x.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # the point itself is never its own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def knn_agreement(
    reference_vectors: np.ndarray, candidate_vectors: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> tuple[dict[str, float], list[str]]:
    """Mean Jaccard of the K-neighbour sets in both spaces per K, and notes for skipped K."""
    a, b = np.asarray(reference_vectors), np.asarray(candidate_vectors)
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b):
        raise UserError("[CLS] vectors must be two (N, dim) arrays over the same N examples")
    n = len(a)
    usable = sorted(k for k in ks if k < n)
    notes = [
        f"kNN agreement at K={k} skipped: needs more than {k} examples, got {n}"
        for k in ks
        if k >= n
    ]
    if not usable:
        return {}, notes
    kmax = usable[-1]
    na, nb = nearest_neighbours(a, kmax), nearest_neighbours(b, kmax)
    result = {}
    for k in usable:
        # Sets of k distinct ids each: |A ∩ B| from pairwise equality, |A ∪ B| = 2k − |A ∩ B|.
        inter = (na[:, :k, None] == nb[:, None, :k]).sum(axis=(1, 2))
        result[str(k)] = float(np.mean(inter / (2 * k - inter)))
    return result, notes


def compare_predictions(
    reference_records: Sequence[dict[str, Any]],
    candidate_records: Sequence[dict[str, Any]],
    reference_cls: np.ndarray | None = None,
    candidate_cls: np.ndarray | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The `fidelity` object of results.json for one candidate against the reference.

    `reference_cls` / `candidate_cls` are (N, dim) arrays in the order of their own records;
    they are re-ordered by id here. Calibration is the candidate's own (None without
    probabilities); the report compares it with the reference model's entry.
    """
    ref, cand, ref_idx, cand_idx = align(reference_records, candidate_records)
    if not ref:
        raise UserError("no prediction records to compare")
    notes: list[str] = []
    knn = None
    if reference_cls is not None and candidate_cls is not None:
        ref_cls = np.asarray(reference_cls)[ref_idx]
        cand_cls = np.asarray(candidate_cls)[cand_idx]
        knn, notes = knn_agreement(ref_cls, cand_cls, ks)
    return {
        "examples": len(ref),
        "agreement": prediction_agreement(ref, cand),
        "error_jaccard": jaccard(error_ids(ref), error_ids(cand)),
        "calibration": records_calibration(cand, label_names),
        "knn_agreement": knn,
        "notes": notes,
    }
