"""Layer-selection criteria: which n encoder layers to remove, all in one registry.

A criterion is one function registered under one name. It receives a `LayerRequest` (the model's
layer count, how many layers to remove, and whatever inputs it declared it needs) and returns a
`Choice`: 1-based layers (layer k produced hidden state k) plus JSON-ready evidence for the
report. Callers go through `select_layers`, which checks the name, the count and the inputs first.

- top / bottom / alternate / middle / random / explicit: layer positions (Sajjad et al.,
  arXiv 2004.03844), see `strategies`;
- block-influence (ShortGPT, arXiv 2403.03853): BI_k = 1 - S[k-1][k]; remove the lowest;
- angular-block (Gromov et al., arXiv 2403.17887): the contiguous block l+1..l+n minimising
  arccos(S[l][l+n]) / pi;
- greedy (SLEB, arXiv 2402.09025): identity replacement with the least KL to the original,
  one layer at a time, on training batches (see `greedy`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from asc_deploy.compress import strategies
from asc_deploy.errors import UserError

Need = Literal["similarity", "model", "layers"]
# What each need means, for messages; the CLI names its own flags.
NEED_TEXT: dict[str, str] = {
    "similarity": "the ASC similarity matrix (similarity.json from `asc-deploy profile`)",
    "model": "the model and batches from the task's training split",
    "layers": "the explicit list of layers to remove",
}


@dataclass
class LayerRequest:
    num_layers: int
    count: int
    seed: int = 42
    similarity: np.ndarray | None = None  # (L+1, L+1), state 0 = embeddings
    model: Any = None  # a loaded model with its task head (greedy)
    batches: Sequence[Mapping] | None = None  # encoded training batches (greedy)
    layers: Sequence[int] | None = None  # explicit


@dataclass(frozen=True)
class Choice:
    layers: list[int]  # 1-based, sorted
    evidence: dict = field(default_factory=dict)  # scores behind the choice, JSON-ready


@dataclass(frozen=True)
class Criterion:
    name: str
    choose: Callable[[LayerRequest], Choice]
    needs: frozenset[str]
    summary: str


CRITERIA: dict[str, Criterion] = {}


def criterion(name: str, summary: str, needs: Sequence[Need] = ()):
    """Register a criterion function under `name` (adding one is this decorator and a function)."""

    def register(choose: Callable[[LayerRequest], Choice]) -> Callable[[LayerRequest], Choice]:
        CRITERIA[name] = Criterion(name, choose, frozenset(needs), summary)
        return choose

    return register


def criterion_names() -> list[str]:
    return list(CRITERIA)


def get_criterion(name: str) -> Criterion:
    try:
        return CRITERIA[name]
    except KeyError:
        raise UserError(
            f"unknown layer-selection criterion '{name}'; choose one of {', '.join(CRITERIA)}"
        ) from None


def check_count(num_layers: int, count: int, option: str = "the layer count") -> int:
    if not 1 <= count < num_layers:
        raise UserError(
            f"{option} {count} is out of range: remove 1..{num_layers - 1} of this model's "
            f"{num_layers} layers (keep at least one)"
        )
    return count


def check_request(
    name: str,
    num_layers: int,
    count: int | None,
    given: set[str],
    need_text: Mapping[str, str] = NEED_TEXT,
    count_option: str = "the layer count",
) -> Criterion:
    """Everything a request can get wrong, checked before any model or data is loaded.

    `given`: which of the criterion's inputs the caller has ("similarity", "model", "layers").
    An explicit criterion takes its count from its layers, so `count` may be None for it.
    `need_text` / `count_option` let a caller name its own flags in the messages.
    """
    chosen = get_criterion(name)
    missing = sorted(chosen.needs - given)
    if missing:
        raise UserError(f"criterion {name} needs {need_text[missing[0]]}")
    if "layers" not in chosen.needs:
        if count is None:
            raise UserError(f"criterion {name} needs {count_option} (how many layers to remove)")
        check_count(num_layers, count, count_option)
    return chosen


def select_layers(
    name: str,
    num_layers: int,
    count: int | None = None,
    *,
    seed: int = 42,
    similarity: np.ndarray | None = None,
    model: Any = None,
    batches: Sequence[Mapping] | None = None,
    layers: Sequence[int] | None = None,
) -> Choice:
    """The layers criterion `name` removes from a `num_layers`-layer model (1-based, sorted)."""
    given = {
        need
        for need, value in (("similarity", similarity), ("model", model), ("layers", layers))
        if value is not None
    }
    if model is not None and batches is None:
        given.discard("model")
    chosen = check_request(name, num_layers, count, given)
    if similarity is not None:
        similarity = np.asarray(similarity, dtype=np.float64)
        if similarity.shape != (num_layers + 1, num_layers + 1):
            raise UserError(
                f"the similarity matrix is {similarity.shape[0]}x{similarity.shape[1]} but a "
                f"{num_layers}-layer model needs {num_layers + 1}x{num_layers + 1}; "
                "profile this model"
            )
    request = LayerRequest(num_layers, count or 0, seed, similarity, model, batches, layers)
    return chosen.choose(request)


# --- layer positions ------------------------------------------------------------------------


@criterion("top", "the last n layers (closest to the output)")
def _top(r: LayerRequest) -> Choice:
    return Choice(strategies.top_layers(r.num_layers, r.count))


@criterion("bottom", "the first n layers (closest to the embeddings)")
def _bottom(r: LayerRequest) -> Choice:
    return Choice(strategies.bottom_layers(r.num_layers, r.count))


@criterion("alternate", "every other layer from the top, keeping the last")
def _alternate(r: LayerRequest) -> Choice:
    return Choice(strategies.alternate_layers(r.num_layers, r.count))


@criterion("middle", "n layers symmetric around the middle")
def _middle(r: LayerRequest) -> Choice:
    return Choice(strategies.middle_layers(r.num_layers, r.count))


@criterion("random", "n layers drawn with a seed")
def _random(r: LayerRequest) -> Choice:
    return Choice(strategies.random_layers(r.num_layers, r.count, r.seed), {"seed": r.seed})


@criterion("explicit", "the layers given", needs=("layers",))
def _explicit(r: LayerRequest) -> Choice:
    return Choice(strategies.explicit_layers(r.num_layers, r.layers or []))


# --- the similarity matrix ------------------------------------------------------------------


@criterion(
    "block-influence",
    "ShortGPT: the n layers with the lowest 1 - S[k-1][k]",
    needs=("similarity",),
)
def _block_influence(r: LayerRequest) -> Choice:
    influence = {k: 1.0 - float(r.similarity[k - 1, k]) for k in range(1, r.num_layers + 1)}
    ranked = sorted(influence, key=lambda k: (influence[k], k))  # ties: the shallower layer
    return Choice(sorted(ranked[: r.count]), {"block_influence": influence})


@criterion(
    "angular-block",
    "Gromov et al.: the contiguous n-layer block minimising arccos(S[l][l+n]) / pi",
    needs=("similarity",),
)
def _angular_block(r: LayerRequest) -> Choice:
    n = r.count
    distance = {
        start: float(np.arccos(np.clip(r.similarity[start, start + n], -1.0, 1.0)) / np.pi)
        for start in range(r.num_layers - n + 1)
    }
    best = min(distance, key=lambda s: (distance[s], s))  # ties: the shallower block
    return Choice(
        list(range(best + 1, best + n + 1)),
        {"angular_distance_by_start_state": distance, "start_state": best},
    )


# --- the model on training data -------------------------------------------------------------


@criterion(
    "greedy",
    "SLEB: one layer at a time, the identity replacement with the least KL to the original",
    needs=("model",),
)
def _greedy(r: LayerRequest) -> Choice:
    from asc_deploy.compress.greedy import greedy_removal
    from asc_deploy.progress import progress_bar

    # One pass over the batches per layer still in the model, for each layer removed: minutes
    # on a base-size model, so it shows progress like any long stage.
    passes = sum(r.num_layers - k for k in range(r.count))
    with progress_bar("greedy layer selection", passes) as advance:
        layers, path = greedy_removal(r.model, r.batches, r.count, progress=advance)
    return Choice(
        layers,
        {
            "order": [step.layer for step in path],
            "kl_path": [step.kl for step in path],
            "steps": [step.record() for step in path],
            "measure": "mean KL(original || pruned) of the output distribution, training batches",
        },
    )
