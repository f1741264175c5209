"""Is a compressed model's score really different from the reference's? Paired statistics.

Both models are scored on the same evaluation examples, so each comparison is paired by example
id (`fidelity.align`):

- per-example scores, in points (x100): classification `accuracy` = correct 0/1; QA `exact` = EM
  0/1 and `f1` = the official SQuAD F1 of that question; where a QA set mixes answerable and
  unanswerable questions (SQuAD 2.0), also `HasAns_*` and `NoAns_*`: the same scores over that
  subset's questions only, as the official scorer splits them;
- the difference of the means (other - reference) with a 95% paired bootstrap interval
  (`scipy.stats.bootstrap`, paired=True, 2000 resamples, seeded), and from the same bootstrap
  distribution the one-sided 95% lower bound (`ni_low`, the lower end of the two-sided 90%
  interval) on which a non-inferiority decision rests: an artifact loses at most B points, at
  one-sided 95% confidence, when ni_low >= -B. The percentile method, not
  BCa: two artifacts that predict alike on every example (fp32 vs optimised ONNX) give equal
  differences everywhere, where the percentile interval collapses to that value and BCa is
  undefined (NaN, its acceleration is 0/0); and for a mean over hundreds of bounded
  per-example differences the bootstrap distribution is near symmetric, so BCa would move the
  ends little;
- classification adds the exact McNemar test: a two-sided binomial test (p = 0.5) on the
  discordant pairs, b = reference right & other wrong, c = reference wrong & other right;
  p = 1 when b + c = 0;
- a difference is *significant* when the interval excludes 0 and, for classification, McNemar's
  p < 0.05 as well (both must agree; a borderline case where they do not is reported as not
  significant);
- the power of the set: `rms_difference`, the root mean square of the per-example differences,
  gives the standard error of the mean difference when the true difference is 0, SE0 = rms /
  sqrt(n); the smallest drop the set can tell from 0 at one-sided 95% is z * SE0, z = 1.645
  (`minimal_detectable_drop`). For right/wrong outcomes each difference is 0 or +-100 points, so
  rms = 100 * sqrt(p_disc), p_disc = (b + c) / n the discordant share McNemar counts, and
  SE0 = 100 * sqrt(p_disc / n);
- random baselines over several seeds: mean and sample standard deviation (ddof=1; none for one
  seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from asc_deploy.errors import UserError

Family = Literal["classification", "question-answering"]
CONFIDENCE = 0.95
NON_INFERIORITY = 0.95  # one-sided: the lower end of the two-sided 90% interval
RESAMPLES = 2000
SEED = 0
SIGNIFICANCE = 0.05
METHOD = "percentile"
MINUS = "\u2212"  # the typographic minus of the report's phrases
# The official SQuAD 2.0 subsets; their scores are named "<subset>_<metric>" (HasAns_f1).
QA_SUBSETS = ("HasAns", "NoAns")


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs and the exact two-sided McNemar p-value."""

    b: int  # reference right, other wrong
    c: int  # reference wrong, other right
    p_value: float


@dataclass(frozen=True)
class PairedComparison:
    """One metric of one model against the reference on the same examples, in points."""

    metric: str
    n: int
    reference: float
    other: float
    delta: float  # other - reference
    ci_low: float
    ci_high: float
    confidence: float
    ni_low: float  # the one-sided `ni_confidence` lower bound of delta
    ni_confidence: float
    rms_difference: float  # sqrt(mean((other - reference)^2)) per example: the set's power
    p_value: float | None  # exact McNemar (classification); None where there is no such test
    discordant: McNemar | None
    significant: bool
    test: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "phrase": self.phrase()}

    def phrase(self) -> str:
        """E.g. '−0.4 [−1.3, +0.5], not significant (McNemar p = 0.41)'."""
        text = f"{_signed(self.delta)} [{_signed(self.ci_low)}, {_signed(self.ci_high)}], "
        text += "significant" if self.significant else "not significant"
        if self.p_value is not None:
            text += f" (McNemar {_p(self.p_value)})"
        return text


@dataclass(frozen=True)
class SeedSummary:
    """A score over several seeds: mean and sample standard deviation (None for one seed)."""

    mean: float
    sd: float | None
    n: int
    values: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "values": list(self.values), "phrase": self.phrase()}

    def phrase(self) -> str:
        """E.g. '81.2 ± 0.9 (3 seeds)' or '81.2 (1 seed)'."""
        if self.sd is None:
            return f"{self.mean:.1f} (1 seed)"
        return f"{self.mean:.1f} \u00b1 {self.sd:.1f} ({self.n} seeds)"


# -- per-example scores ---------------------------------------------------------------------------
def per_example_scores(records: Sequence[dict[str, Any]], family: Family) -> dict[str, np.ndarray]:
    """Metric name -> scores in points: accuracy (classification); exact, f1 (QA), one per record,
    and for a mixed QA set HasAns_/NoAns_ exact and f1, one per record of that subset."""
    if family == "classification":
        from asc_deploy.measure.fidelity import is_correct

        return {"accuracy": 100.0 * np.array([is_correct(r) for r in records], dtype=float)}
    if family == "question-answering":
        return _qa_scores(records)
    raise UserError(
        f"unknown task family '{family}'; expected classification or question-answering"
    )


def _qa_scores(records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    from asc_deploy.tasks.squad_metric import answerable, raw_scores

    ids = [str(i) for i in range(len(records))]  # positions: ids are checked by the caller
    exact, f1 = raw_scores(
        {q: r["gold"] for q, r in zip(ids, records, strict=True)},
        {q: r["prediction"] or "" for q, r in zip(ids, records, strict=True)},
    )
    scores = {
        "exact": 100.0 * np.array([exact[q] for q in ids], dtype=float),
        "f1": 100.0 * np.array([f1[q] for q in ids], dtype=float),
    }
    has_answer = np.array([answerable(r["gold"]) for r in records], dtype=bool)
    if min(has_answer.sum(), (~has_answer).sum()) < 2:
        return scores  # one kind of question (its subset is the whole set), or no interval
    for subset, mask in zip(QA_SUBSETS, (has_answer, ~has_answer), strict=True):
        scores |= {f"{subset}_{metric}": scores[metric][mask] for metric in ("exact", "f1")}
    return scores


# -- tests ----------------------------------------------------------------------------------------
def paired_bootstrap_bounds(
    reference: np.ndarray,
    other: np.ndarray,
    confidence: float = CONFIDENCE,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float, float]:
    """Percentile bootstrap bounds of mean(other) - mean(reference), resampling examples: the
    two-sided `confidence` interval (low, high) and the one-sided NON_INFERIORITY lower bound,
    both read off one bootstrap distribution."""
    from scipy.stats import bootstrap

    def mean_difference(ref, oth, axis=-1):
        return np.mean(oth, axis=axis) - np.mean(ref, axis=axis)

    data = (np.asarray(reference, dtype=float), np.asarray(other, dtype=float))
    common = dict(paired=True, vectorized=True, method=METHOD)
    two_sided = bootstrap(
        data,
        mean_difference,
        n_resamples=n_resamples,
        batch=200,  # bounds memory: 200 resamples of the whole set at a time
        confidence_level=confidence,
        rng=np.random.default_rng(seed),
        **common,
    )
    # No new resamples: the one-sided bound comes from the distribution just drawn, so the two
    # bounds never disagree by resampling noise.
    lower = bootstrap(
        data,
        mean_difference,
        n_resamples=0,
        bootstrap_result=two_sided,
        confidence_level=NON_INFERIORITY,
        alternative="greater",
        **common,
    )
    interval = two_sided.confidence_interval
    return float(interval.low), float(interval.high), float(lower.confidence_interval.low)


def mcnemar_exact(reference_correct: Sequence[bool], other_correct: Sequence[bool]) -> McNemar:
    """Exact two-sided McNemar test on paired right/wrong outcomes."""
    from scipy.stats import binomtest

    ref = np.asarray(reference_correct, dtype=bool)
    oth = np.asarray(other_correct, dtype=bool)
    b = int(np.sum(ref & ~oth))
    c = int(np.sum(~ref & oth))
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return McNemar(b=b, c=c, p_value=p_value)


def compare_scores(
    metric: str,
    reference: np.ndarray,
    other: np.ndarray,
    with_mcnemar: bool,
    confidence: float = CONFIDENCE,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> PairedComparison:
    """Paired comparison of per-example scores in points (McNemar needs 0/100 scores)."""
    reference, other = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    if reference.shape != other.shape or reference.ndim != 1:
        raise UserError("paired scores need one score per example on both sides")
    if len(reference) < 2:
        raise UserError(
            f"a paired comparison needs at least 2 examples (got {len(reference)}); "
            "evaluate on more examples"
        )
    low, high, ni_low = paired_bootstrap_bounds(reference, other, confidence, n_resamples, seed)
    discordant = mcnemar_exact(reference > 0, other > 0) if with_mcnemar else None
    excludes_zero = low > 0 or high < 0
    agrees = discordant is None or discordant.p_value < SIGNIFICANCE
    test = f"paired bootstrap ({METHOD}, {n_resamples} resamples, seed {seed})"
    return PairedComparison(
        metric=metric,
        n=len(reference),
        reference=float(reference.mean()),
        other=float(other.mean()),
        delta=float(other.mean() - reference.mean()),
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        ni_low=ni_low,
        ni_confidence=NON_INFERIORITY,
        rms_difference=float(np.sqrt(np.mean((other - reference) ** 2))),
        p_value=discordant.p_value if discordant else None,
        discordant=discordant,
        significant=excludes_zero and agrees,
        test=test + (" + exact McNemar" if discordant else ""),
    )


def compare_predictions(
    reference: Sequence[dict[str, Any]],
    other: Sequence[dict[str, Any]],
    family: Family,
    confidence: float = CONFIDENCE,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, PairedComparison]:
    """Every per-example metric of `other` vs `reference`, examples aligned by id.

    Classification: {"accuracy"} with McNemar; QA: {"exact", "f1"}, plus HasAns_/NoAns_ exact
    and f1 for a mixed set. A UserError when the two record lists do not cover the same ids.
    """
    from asc_deploy.measure.fidelity import align

    ref, oth, _, _ = align(reference, other)
    ref_scores, other_scores = per_example_scores(ref, family), per_example_scores(oth, family)
    return {
        metric: compare_scores(
            metric,
            ref_scores[metric],
            other_scores[metric],
            with_mcnemar=family == "classification",
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
        )
        for metric in ref_scores
    }


def compare_prediction_files(
    reference: str | Path, other: str | Path, family: Family, seed: int = SEED
) -> dict[str, PairedComparison]:
    """`compare_predictions` on two predictions.jsonl files (`evaluation.save_predictions`)."""
    from asc_deploy.tasks.evaluation import load_predictions

    for path in (reference, other):
        if not Path(path).is_file():
            raise UserError(f"predictions file not found: {path}; evaluate the model first")
    return compare_predictions(
        load_predictions(reference), load_predictions(other), family, seed=seed
    )


def minimal_detectable_drop(rms_difference: float, n: int) -> float:
    """The smallest drop, in points, that n paired examples tell from 0 at one-sided 95%.

    z * SE0 with SE0 = rms_difference / sqrt(n), the standard error of the mean per-example
    difference when the true difference is 0, and z the normal quantile (1.645 at 95%). For
    right/wrong outcomes rms_difference = 100 * sqrt(p_disc), p_disc = (b + c) / n, so this is
    1.645 * 100 * sqrt(p_disc / n). An artifact that truly loses nothing is shown within a budget
    B about half the time once this is B, so a set sized for B has this well below B.
    """
    from scipy.stats import norm

    return float(norm.ppf(NON_INFERIORITY) * rms_difference / np.sqrt(n))


def examples_for(budget: float, rms_difference: float) -> int:
    """The evaluation examples at which `minimal_detectable_drop` falls to `budget`:
    (z * rms_difference / budget)^2, at the same per-example differences."""
    from scipy.stats import norm

    return math.ceil((norm.ppf(NON_INFERIORITY) * rms_difference / budget) ** 2)


def seed_summary(values: Sequence[float]) -> SeedSummary:
    """Mean and sample standard deviation (ddof=1) of a score over seeds; sd None for one seed."""
    if not values:
        raise UserError("no seed results to summarise; run the random baseline with random_seeds")
    array = np.asarray(values, dtype=float)
    sd = float(np.std(array, ddof=1)) if len(array) > 1 else None
    return SeedSummary(
        mean=float(array.mean()), sd=sd, n=len(array), values=tuple(map(float, array))
    )


# -- words ----------------------------------------------------------------------------------------
def _signed(value: float) -> str:
    rounded = round(value, 1)
    if rounded == 0:
        return "0.0"
    return f"{rounded:+.1f}".replace("-", MINUS)


def _p(value: float) -> str:
    if value < 0.001:
        return "p < 0.001"
    return f"p = {value:.3f}" if value < 0.1 else f"p = {value:.2f}"
