"""Benchmark inputs as numpy feeds: a fixed shape, or batches of real tokenised examples.

Real inputs keep the task's length distribution: each batch is padded only to its own longest
example (capped at the requested sequence length), as a server with dynamic padding would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asc_deploy.errors import UserError

MAX_REAL_BATCHES = 64  # enough distinct batches to cover the length distribution
_KNOWN = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def fixed_feed(
    names: Sequence[str], batch: int, sequence: int, vocab_size: int | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """One batch of `batch` x `sequence` random token ids, all attended, segment 0."""
    _check_names(names)
    rng = np.random.default_rng(seed)
    # Skip the first ids (special tokens in BERT-style vocabularies); stay below the vocab.
    high = min(vocab_size, 30000) if vocab_size else 100
    low = min(5, high - 1)
    arrays = {
        "input_ids": rng.integers(low, high, size=(batch, sequence), dtype=np.int64),
        "attention_mask": np.ones((batch, sequence), dtype=np.int64),
        "token_type_ids": np.zeros((batch, sequence), dtype=np.int64),
        "position_ids": np.tile(np.arange(sequence, dtype=np.int64), (batch, 1)),
    }
    return {n: arrays[n] for n in names}


def real_feeds(
    names: Sequence[str], samples: dict[str, np.ndarray], batch: int, sequence: int
) -> list[dict[str, np.ndarray]]:
    """Consecutive batches of saved examples (wrapping around), each trimmed to its longest row."""
    _check_names(names)
    if "input_ids" not in samples or "lengths" not in samples:
        raise UserError(
            "sample inputs need 'input_ids' and 'lengths' arrays; re-export the artifact"
        )
    lengths = np.asarray(samples["lengths"])
    n = len(lengths)
    if n == 0:
        raise UserError("the artifact's sample inputs are empty; re-export it with sample inputs")
    count = min(max(-(-n // batch), 1), MAX_REAL_BATCHES)
    feeds = []
    for k in range(count):
        rows = (np.arange(batch) + k * batch) % n
        width = int(min(max(lengths[rows].max(), 1), sequence))
        feed = {}
        for name in names:
            if name == "position_ids":
                feed[name] = np.tile(np.arange(width, dtype=np.int64), (batch, 1))
            elif name in samples:
                feed[name] = np.ascontiguousarray(samples[name][rows, :width].astype(np.int64))
            elif name == "token_type_ids":
                feed[name] = np.zeros((batch, width), dtype=np.int64)
            else:
                raise UserError(f"sample inputs have no '{name}' array, which the model needs")
        feeds.append(feed)
    return feeds


def mean_sequence(feeds: Sequence[dict[str, np.ndarray]]) -> float:
    """Average padded length the model actually sees."""
    widths = [next(iter(f.values())).shape[1] for f in feeds]
    return float(np.mean(widths))


def cast_to_graph(feed: dict[str, np.ndarray], dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """Match ONNX input element types ('tensor(int32)' graphs get int32)."""
    cast = {"tensor(int32)": np.int32, "tensor(int64)": np.int64}
    return {k: v.astype(cast.get(dtypes.get(k, ""), v.dtype), copy=False) for k, v in feed.items()}


def _check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in _KNOWN]
    if unknown:
        raise UserError(
            f"model inputs {unknown} are not token inputs the harness can generate "
            f"(it feeds {', '.join(_KNOWN)})"
        )
