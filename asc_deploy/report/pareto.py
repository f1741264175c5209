"""The Pareto frontier of accuracy against a cost (latency, size): what no other point beats."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, by increasing cost.

    Each point is (cost, value): lower cost and higher value are better. A point is dominated
    when another has cost <= and value >= with at least one strict; exact duplicates of a
    frontier point are kept (neither beats the other). Points with a NaN are ignored.
    """
    usable = [i for i, (c, v) in enumerate(points) if not (math.isnan(c) or math.isnan(v))]
    # Sweep by cost, best value first among equal costs: a point joins the frontier only if it
    # beats the best value seen at any lower-or-equal cost.
    order = sorted(usable, key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    for i in order:
        if not front or points[i][1] > points[front[-1]][1] or points[i] == points[front[-1]]:
            front.append(i)
    return front
