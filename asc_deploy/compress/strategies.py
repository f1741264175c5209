"""Layer positions for the usual layer-dropping baselines (Sajjad et al., arXiv 2004.03844).

Every function returns 1-based layer numbers (layer k produced hidden state k), so a report can
put ASC's choice and a baseline's side by side; a fair comparison removes as many layers as ASC
does. They are registered as criteria, with the similarity- and model-based ones, in `criteria`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from asc_deploy.errors import UserError


def _check_count(num_layers: int, count: int) -> None:
    if count < 0:
        raise UserError(f"cannot remove {count} layers; give a count of 0 or more")
    if count >= num_layers:
        raise UserError(
            f"refusing to remove {count} of {num_layers} layers; keep at least one layer"
        )


def top_layers(num_layers: int, count: int) -> list[int]:
    """The last `count` layers (closest to the output)."""
    _check_count(num_layers, count)
    return list(range(num_layers - count + 1, num_layers + 1))


def bottom_layers(num_layers: int, count: int) -> list[int]:
    """The first `count` layers (closest to the embeddings)."""
    _check_count(num_layers, count)
    return list(range(1, count + 1))


def alternate_layers(num_layers: int, count: int) -> list[int]:
    """Every other layer from the top, keeping the last one: L-1, L-3, ... (Sajjad's odd-alternate).

    When more layers must go than the alternate positions hold, continue with the remaining layers
    from the top so the count is always met.
    """
    _check_count(num_layers, count)
    order = list(range(num_layers - 1, 0, -2)) + list(range(num_layers, 0, -2))
    return sorted(order[:count])


def middle_layers(num_layers: int, count: int) -> list[int]:
    """`count` layers symmetric around the middle, keeping the bottom and top ones longest."""
    _check_count(num_layers, count)
    centre = (num_layers + 1) / 2
    by_distance = sorted(range(1, num_layers + 1), key=lambda k: (abs(k - centre), k))
    return sorted(by_distance[:count])


def random_layers(num_layers: int, count: int, seed: int = 42) -> list[int]:
    _check_count(num_layers, count)
    return sorted(random.Random(seed).sample(range(1, num_layers + 1), count))


def explicit_layers(num_layers: int, layers: Sequence[int]) -> list[int]:
    chosen = sorted(set(layers))
    outside = [k for k in chosen if not 1 <= k <= num_layers]
    if outside:
        raise UserError(f"layers {outside} do not exist; this model has layers 1..{num_layers}")
    _check_count(num_layers, len(chosen))
    return chosen
