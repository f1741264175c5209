"""SQuAD 2.0 exact match and F1, following the official `evaluate-v2.0.py` scorer exactly.

Normalisation: lower-case, strip punctuation, drop the articles a/an/the, collapse whitespace.
An unanswerable question has the single gold answer "" (the empty string). A question's score is
the maximum over its gold answers. Everything is a percentage.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact_score(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def f1_score(gold: str, prediction: str) -> float:
    gold_toks, pred_toks = _tokens(gold), _tokens(prediction)
    if not gold_toks or not pred_toks:
        # The official rule: if either is no-answer, F1 is 1 when they agree, 0 otherwise.
        return float(gold_toks == pred_toks)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _gold_list(answers: Sequence[str]) -> list[str]:
    # The official scorer drops golds that normalise to nothing, and uses [""] for none left.
    golds = [a for a in answers if normalize_answer(a)]
    return golds or [""]


def answerable(answers: Sequence[str]) -> bool:
    """Whether the official scorer counts a question in HasAns (else NoAns)."""
    return _gold_list(answers) != [""]


def raw_scores(
    gold_answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-question exact and F1 (0/1 and 0..1) for every question in `gold_answers`."""
    exact, f1 = {}, {}
    for qid, answers in gold_answers.items():
        golds = _gold_list(answers)
        pred = predictions.get(qid, "")
        exact[qid] = max(exact_score(g, pred) for g in golds)
        f1[qid] = max(f1_score(g, pred) for g in golds)
    return exact, f1


def squad_v2_scores(
    gold_answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> dict[str, float]:
    """exact, f1 and total; HasAns_* and NoAns_* where such questions exist."""
    exact, f1 = raw_scores(gold_answers, predictions)
    has_ans = [q for q, a in gold_answers.items() if answerable(a)]
    no_ans = [q for q, a in gold_answers.items() if not answerable(a)]
    out = _averages(exact, f1, list(gold_answers))
    if has_ans:
        out.update({f"HasAns_{k}": v for k, v in _averages(exact, f1, has_ans).items()})
    if no_ans:
        out.update({f"NoAns_{k}": v for k, v in _averages(exact, f1, no_ans).items()})
    return out


def _averages(exact: Mapping[str, float], f1: Mapping[str, float], qids: list[str]) -> dict:
    n = len(qids)
    return {
        "exact": 100.0 * sum(exact[q] for q in qids) / n,
        "f1": 100.0 * sum(f1[q] for q in qids) / n,
        "total": float(n),
    }


def best_null_threshold(
    gold_answers: Mapping[str, Sequence[str]],
    span_predictions: Mapping[str, str],
    null_score_diffs: Mapping[str, float],
) -> dict[str, float]:
    """The official `find_best_thresh`: the null threshold that maximises EM and F1.

    `span_predictions` hold each question's best non-null span; the question is predicted
    unanswerable when its null_score_diff (null score minus best span score) is above the
    threshold. Returns best_exact, best_exact_thresh, best_f1, best_f1_thresh.
    """
    exact, f1 = raw_scores(gold_answers, span_predictions)
    out = {}
    for name, scores in (("exact", exact), ("f1", f1)):
        best, thresh = _find_best(gold_answers, span_predictions, null_score_diffs, scores)
        out[f"best_{name}"], out[f"best_{name}_thresh"] = best, thresh
    return out


def _find_best(gold_answers, span_predictions, diffs, scores) -> tuple[float, float]:
    # Start with every question predicted null, then answer them in order of increasing diff.
    num_no_ans = sum(1 for a in gold_answers.values() if _gold_list(a) == [""])
    cur = best = float(num_no_ans)
    thresh = min(diffs.values()) - 1.0 if diffs else 0.0
    for qid in sorted(gold_answers, key=lambda q: diffs[q]):
        if _gold_list(gold_answers[qid]) != [""]:
            cur += scores[qid]
        elif span_predictions.get(qid, ""):
            cur -= 1
        if cur > best:
            best, thresh = cur, diffs[qid]
    return 100.0 * best / len(gold_answers), float(thresh)
