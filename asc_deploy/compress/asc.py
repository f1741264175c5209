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
