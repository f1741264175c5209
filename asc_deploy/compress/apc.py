"""APC (Adaptive Parameter Compression): target widths, and the decisions taken for them.

Every linear layer `Y = X W + b` of the encoder becomes `Y' = X' W' + b'` with
`W' = U W D + B` and `b' = Dᵀ Wᵀ b_U + Dᵀ b + b_D` (`../shared/docs/apc-method.md`; in Hugging Face
orientation `W'_hf = Dᵀ W_hf Uᵀ + Bᵀ`). `U` maps a layer's compressed input width back to its
input, `D` its output down to the compressed output width; both start from a basis of the width
(`width_init.py`) and are trained (`apc_model.py`: the narrow model whose parameters are computed
from the original ones and the projections, so finalising is evaluating them once).

The decisions the paper leaves open (apc-method.md), as taken here:
- one hidden width for every block, inter-block maps the identity, attention width = hidden width
  (the kept heads times the new head size), one FFN width for every layer;
- the embedding tables share one projection `P` (H x H') into the new hidden width;
- LayerNorm parameters live in the new width as their own parameters, started as each
  compressed dimension's weighted mean of the original values (a selection picks them);
- queries are rescaled by `sqrt(head' / head)` so attention logits keep the original scale;
- the pooler and a RoBERTa/MPNet head's hidden layer are narrowed to the new hidden width like any
  block (their own bases); the head's outputs keep their width;
- MPNet shares one relative-position table across layers, so it keeps every head.
This module holds the light part (no torch): the target widths and their checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from asc_deploy.compress.width_map import width_map_for
from asc_deploy.errors import UserError

Biases = Literal["none", "ud", "all"]
INITS: tuple[str, ...] = ("sensitivity", "random", "kmeans", "svd")
BIASES: tuple[str, ...] = ("none", "ud", "all")
# A narrowed folder's files beside the model: what was done, and the frozen teacher-to-student
# hidden map that distillation compares hidden states through.
WIDTH_RECORD = "width.json"
WIDTH_PROJECTION = "width_projection.safetensors"


@dataclass(frozen=True)
class Widths:
    """The target shape: residual width, FFN width and kept heads (head size = hidden / heads)."""

    hidden: int
    ffn: int
    heads: int

    @property
    def label(self) -> str:
        return f"hidden {self.hidden}, FFN {self.ffn}, {self.heads} heads"


@dataclass(frozen=True)
class Shape:
    hidden: int
    ffn: int
    heads: int

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def of(cls, config) -> Shape:
        return cls(config.hidden_size, config.intermediate_size, config.num_attention_heads)


def resolve_widths(
    config,
    hidden: int | None = None,
    ffn: int | None = None,
    heads: int | None = None,
    key: str = "apc",
) -> Widths:
    """The target widths for a model's config, every constraint checked (`key` names the setting
    in messages: `apc.targets[0]` in a config, `--widths` on the command line)."""
    width_map_for(config.model_type)  # an architecture without a mapping fails first
    shape = Shape.of(config)
    asked = {"hidden": hidden, "ffn": ffn, "heads": heads}
    if all(v is None for v in asked.values()):
        raise UserError(f"{key}: name at least one of hidden, ffn, heads to narrow")
    own = {"hidden": shape.hidden, "ffn": shape.ffn, "heads": shape.heads}
    for name, value in asked.items():
        if value is not None and not 1 <= value < own[name]:
            raise UserError(
                f"{key}.{name}: {value} must be below the model's {name} width {own[name]} "
                "(and at least 1); a width equal to the model's is no compression"
            )
    hidden = hidden or shape.hidden
    if heads is None:
        heads = shape.heads
    if hidden % heads:
        raise UserError(
            f"{key}.hidden: {hidden} is not divisible by the {heads} heads kept; choose a "
            f"multiple of {heads}, or set {key}.heads to a divisor of {hidden}"
        )
    if hidden // heads > shape.head_size:
        fewest = math.ceil(hidden / shape.head_size)
        raise UserError(
            f"{key}.heads: {heads} heads of {hidden // heads} dimensions exceed the model's head "
            f"size {shape.head_size}; keep at least {fewest} heads for hidden width {hidden}"
        )
    if heads != shape.heads and width_map_for(config.model_type).shared_head_tables:
        raise UserError(
            f"{key}.heads: {config.model_type} shares one relative-position table across its "
            f"layers, so every layer keeps all {shape.heads} heads; narrow hidden (head size) "
            "instead"
        )
    return Widths(hidden=hidden, ffn=ffn or shape.ffn, heads=heads)


def narrow_config(config, widths: Widths):
    narrow = config.__class__.from_dict(config.to_dict())
    narrow.hidden_size = widths.hidden
    narrow.intermediate_size = widths.ffn
    narrow.num_attention_heads = widths.heads
    return narrow
