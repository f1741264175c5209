"""The ASC similarity heatmap, with each threshold's removed layers marked."""

from __future__ import annotations

import io

import numpy as np


def similarity_heatmap(matrix: np.ndarray, selections: dict[float, list[int]] | None = None) -> bytes:
    """PNG bytes: S[i, k] for states 0..L, and one row of markers per threshold's removed layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    size = matrix.shape[0]
    selections = selections or {}
    fig, (ax, marks) = plt.subplots(
        2, 1, figsize=(0.5 * size + 3, 0.5 * size + 1.2 + 0.3 * len(selections)),
        gridspec_kw={"height_ratios": [size, max(len(selections), 1)]},
    )
    image = ax.imshow(matrix, cmap="viridis", vmin=min(0.0, matrix.min()), vmax=1.0)
    for i in range(size):
        for k in range(size):
            colour = "black" if matrix[i, k] > 0.6 else "white"
            ax.text(k, i, f"{matrix[i, k]:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(size), ["emb"] + [str(k) for k in range(1, size)])
    ax.set_yticks(range(size), ["emb"] + [str(k) for k in range(1, size)])
    ax.set_title("Hidden-state cosine similarity (state k = output of layer k)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    for row, (threshold, removed) in enumerate(sorted(selections.items(), reverse=True)):
        marks.scatter(removed, [row] * len(removed), marker="x", color="crimson", s=60)
    marks.set_xlim(-0.5, size - 0.5)
    marks.set_xticks(range(size), ["emb"] + [str(k) for k in range(1, size)])
    marks.set_yticks(range(len(selections)), [f"{t:.2f}" for t in sorted(selections, reverse=True)])
    marks.set_ylim(-0.5, max(len(selections), 1) - 0.5)
    marks.set_title("layers removed per threshold", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
