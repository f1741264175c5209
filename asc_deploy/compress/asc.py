"""ASC: the layer-similarity matrix of a fine-tuned encoder on task data, and the selection rule.

See ../shared/docs/asc-method.md. State 0 is the embedding output and state k the output of
encoder layer k; layer numbers here are 1-based like the paper's, so layer k produced state k.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from asc_deploy.errors import UserError

DEFAULT_THRESHOLDS = (0.90, 0.85, 0.80)
EPSILON = 0.01


@dataclass
class SimilarityProfile:
    matrix: np.ndarray  # (L+1, L+1), symmetric, unit diagonal
    examples: int
    tokens: int

    @property
    def num_layers(self) -> int:
        return self.matrix.shape[0] - 1


class SimilarityAccumulator:
    """Sums per-example mean token cosines between every pair of hidden states, batch by batch.

    Each example contributes the mean over its own non-padding tokens, so neither padding nor
    batch composition changes the result.
    """

    def __init__(self, num_states: int):
        self.total = np.zeros((num_states, num_states), dtype=np.float64)
        self.examples = 0
        self.tokens = 0

    def add(self, hidden_states, attention_mask) -> None:
        """hidden_states: (L+1) tensors of (batch, seq, hidden); attention_mask: (batch, seq)."""
        import torch

        states = torch.stack([h.float() for h in hidden_states], dim=2)  # (B, T, L+1, H)
        states = torch.nn.functional.normalize(states, dim=-1)
        mask = attention_mask.to(states.dtype)
        # One Gram matrix per token: cos(state i, state k) for all pairs at once.
        gram = torch.einsum("btih,btkh->btik", states, states)
        per_example = torch.einsum("btik,bt->bik", gram, mask) / mask.sum(dim=1)[:, None, None]
        self.total += per_example.sum(dim=0).double().cpu().numpy()
        self.examples += int(mask.shape[0])
        self.tokens += int(mask.sum().item())

    def result(self) -> SimilarityProfile:
        if self.examples == 0:
            raise UserError(
                "no examples were profiled; the training split is empty or max_samples is 0"
            )
        matrix = self.total / self.examples
        matrix = (matrix + matrix.T) / 2
        np.fill_diagonal(matrix, 1.0)
        return SimilarityProfile(matrix=matrix, examples=self.examples, tokens=self.tokens)


def profile_similarity(model, batches: Iterable[Mapping], progress=None) -> SimilarityProfile:
    """One eval-mode, no-grad pass of `model` over `batches` (dicts of model inputs)."""
    import torch

    model.eval()
    accumulator: SimilarityAccumulator | None = None
    with torch.inference_mode():
        for batch in batches:
            inputs = {k: torch.as_tensor(v) for k, v in batch.items()}
            outputs = model(**inputs, output_hidden_states=True)
            hidden = outputs.hidden_states
            if accumulator is None:
                accumulator = SimilarityAccumulator(len(hidden))
            accumulator.add(hidden, inputs["attention_mask"])
            if progress is not None:
                progress(int(inputs["attention_mask"].shape[0]))
    if accumulator is None:
        raise UserError(
            "no examples were profiled; the training split is empty or max_samples is 0"
        )
    return accumulator.result()


def check_threshold(threshold: float) -> float:
    if not 0 < threshold <= 1:
        raise UserError(f"threshold {threshold} is outside (0, 1]; use e.g. 0.90, 0.85 or 0.80")
    return threshold


def select_redundant_layers(
    matrix: np.ndarray, threshold: float, epsilon: float = EPSILON
) -> list[int]:
    """The authors' one-shot rule: 1-based layers whose state is close to an earlier kept state.

    A removed state never serves as a reference, and state 0 (the embeddings) is never removed.
    """
    check_threshold(threshold)
    matrix = np.asarray(matrix)
    size = matrix.shape[0]
    redundant: set[int] = set()
    for i in range(size):
        if i in redundant:
            continue
        for k in range(i + 1, size):
            if k not in redundant and matrix[i, k] >= threshold - epsilon:
                redundant.add(k)
    return sorted(redundant)


def selections_for_thresholds(
    matrix: np.ndarray, thresholds: Iterable[float] = DEFAULT_THRESHOLDS, epsilon: float = EPSILON
) -> dict[float, list[int]]:
    """The matrix is computed once per task and reused for every threshold."""
    return {t: select_redundant_layers(matrix, t, epsilon) for t in thresholds}


@dataclass(frozen=True)
class DepthChoice:
    """ASC at a target depth: the highest threshold whose selection removes exactly `count`."""

    count: int
    threshold: float | None  # None: no threshold in (0, 1] removes exactly `count` layers
    layers: list[int] | None
    reason: str | None = None
    # The nearest counts the rule does reach: (count, highest threshold that gives it).
    nearest: tuple[tuple[int, float], ...] = ()

    def record(self) -> dict:
        return {
            "count": self.count,
            "threshold": self.threshold,
            "layers": self.layers,
            "reason": self.reason,
            "nearest": [{"count": c, "threshold": t} for c, t in self.nearest],
        }


def _highest_threshold_admitting(value: float, epsilon: float) -> float:
    """The largest double t with `value >= t - epsilon` as the rule computes it.

    t = value + epsilon can miss by an ulp either way after rounding, so step to the exact edge;
    `t - epsilon` is monotone in t, so the edge is unique.
    """
    t = float(value) + epsilon
    while t - epsilon > value:
        t = float(np.nextafter(t, -np.inf))
    while float(np.nextafter(t, np.inf)) - epsilon <= value:
        t = float(np.nextafter(t, np.inf))
    return t


def threshold_sweep(matrix: np.ndarray, epsilon: float = EPSILON) -> list[tuple[float, list[int]]]:
    """Every selection the rule can make over thresholds in (0, 1], each with the highest
    threshold that makes it, highest threshold first.

    The rule compares entries S[i][k] (i < k) with t - epsilon, so the selection depends only on
    which entries are admitted; that set changes only where t - epsilon passes an entry's value.
    For an entry v the highest admitting threshold is the edge t*(v); any threshold t gives the
    same selection as t*(v_min) >= t, where v_min is the smallest entry t admits (none admitted:
    the selection at t = 1 when 1 admits nothing either). So these candidates, capped at 1, cover
    every reachable selection at its highest threshold.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    entries = np.unique(matrix[np.triu_indices(matrix.shape[0], k=1)])
    candidates = {1.0}
    for value in entries:
        t = _highest_threshold_admitting(float(value), epsilon)
        if t > 0:
            candidates.add(min(t, 1.0))
    sweep: list[tuple[float, list[int]]] = []
    for t in sorted(candidates, reverse=True):
        layers = select_redundant_layers(matrix, t, epsilon)
        if not sweep or sweep[-1][1] != layers:
            sweep.append((t, layers))
    return sweep


def threshold_for_depth(matrix: np.ndarray, count: int, epsilon: float = EPSILON) -> DepthChoice:
    """The highest threshold at which the authors' rule removes exactly `count` layers.

    Lowering the threshold does not always remove more layers (a newly removed state stops
    serving as a reference), so the whole sweep is searched, highest threshold first.
    """
    num_layers = np.asarray(matrix).shape[0] - 1
    if not 1 <= count < num_layers:
        raise UserError(
            f"cannot remove {count} of {num_layers} layers with ASC; "
            f"ask for 1..{num_layers - 1} layers"
        )
    sweep = threshold_sweep(matrix, epsilon)
    for t, layers in sweep:
        if len(layers) == count:
            return DepthChoice(count=count, threshold=t, layers=layers)
    highest: dict[int, float] = {}
    for t, layers in sweep:
        highest.setdefault(len(layers), t)
    below = [c for c in highest if c < count]
    above = [c for c in highest if c > count]
    closest = ([max(below)] if below else []) + ([min(above)] if above else [])
    reached = ", ".join(str(c) for c in sorted(highest))
    return DepthChoice(
        count=count,
        threshold=None,
        layers=None,
        reason=(
            f"no threshold in (0, 1] makes the ASC rule (epsilon {epsilon}) remove exactly "
            f"{count} layers; it removes {reached} layers at some threshold"
        ),
        nearest=tuple((c, highest[c]) for c in closest),
    )


def thresholds_for_depths(
    matrix: np.ndarray, counts: Iterable[int], epsilon: float = EPSILON
) -> dict[int, DepthChoice]:
    """`threshold_for_depth` for each requested count (config `asc.remove_layers`)."""
    return {count: threshold_for_depth(matrix, count, epsilon) for count in counts}
