"""Figure helpers shared by the profile's similarity heatmap (compress/profiling.py) and the
report's figures (report/plots.py): here, below both, so compress needs nothing from report.
Imported only where a figure is drawn (it loads matplotlib)."""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes, drawn on an Agg canvas (no display, no pyplot state)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def selection_grid(ax, selections: dict[float, list[int]], n_layers: int) -> None:
    """Threshold x layer grid on `ax`: an x where that threshold removes the layer (1-based)."""
    thresholds = sorted(selections, reverse=True)
    grid = [
        [1 if layer in selections[t] else 0 for layer in range(1, n_layers + 1)] for t in thresholds
    ]
    if not grid:
        ax.set_axis_off()
        return
    ax.imshow(grid, cmap="Reds", vmin=0, vmax=1.4, aspect="auto")
    ax.set_xticks(range(n_layers), [str(i) for i in range(1, n_layers + 1)])
    ax.set_yticks(range(len(thresholds)), [f"{t:g}" for t in thresholds])
    for r in range(len(thresholds)):
        for c in range(n_layers):
            ax.text(c, r, "x" if grid[r][c] else "", ha="center", va="center", fontsize=10)
    ax.set_xlabel("layer (removed: x)")
    ax.set_ylabel("threshold")
    ax.set_title("Layers each threshold removes")
