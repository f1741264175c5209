"""Where each architecture's widths live: which parameter reads and writes which width.

APC (`apc.py`) narrows three widths of an encoder: the residual stream (`hidden`), each layer's
attention inner width (`attn.<i>`, per head) and each layer's FFN width (`ffn.<i>`), plus the
head's own hidden widths (`pooler`, `head`). A *site* is one such width. Every parameter of the
model has a role: a linear layer reading one site and writing another, a vector (LayerNorm) in a
site, an embedding table writing the hidden site, or a copy (kept as it is). Adapters know where
layers are; this map knows which width each tensor has, so the compression code is generic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from asc_deploy.errors import UserError

Kind = Literal["linear", "vector", "embedding", "copy"]


@dataclass(frozen=True)
class Role:
    kind: Kind
    in_site: str | None = None  # linear: the width it reads (always compressed)
    out_site: str | None = None  # linear: the width it writes (None: the head's outputs)
    site: str | None = None  # vector: the width it lives in
    query: bool = False  # a query projection: rescaled so attention logits keep their scale


@dataclass(frozen=True)
class Taps:
    """Module paths (relative to the full model) whose activations are a site's: for importance
    masks and activation samples. `{i}` is the layer index."""

    embeddings: str
    layer: str
    attention_context: str  # the module whose *input* is the attention context (output matrix)
    ffn_activation: str  # the module whose *input* is the FFN's activation (second matrix)
    pooler: str | None  # the module whose *output* is the pooled vector
    head_hidden: str | None  # the module whose *input* is the head's hidden vector


@dataclass(frozen=True)
class WidthMap:
    model_type: str
    rules: tuple[tuple[str, Role], ...]  # (regex on the parameter name, role); first match wins
    taps: dict[str, Taps]  # head class name fragment -> taps ("" matches any)
    shared_head_tables: tuple[str, ...] = ()  # per-head tables shared by all layers (MPNet)

    def role(self, name: str) -> Role:
        for pattern, role in self.rules:
            match = re.search(pattern, name)
            if match:
                groups = match.groupdict()
                if "i" in groups:
                    return _with_layer(role, groups["i"])
                return role
        raise UserError(
            f"APC: no width mapping for parameter '{name}' of this {self.model_type} model; "
            "width compression supports the standard encoder and head layouts only"
        )

    def taps_for(self, model) -> Taps:
        prefix = model.base_model_prefix
        name = type(model).__name__
        for fragment, taps in self.taps.items():
            if fragment and fragment in name:
                return _prefixed(taps, prefix, model)
        return _prefixed(self.taps[""], prefix, model)


def _with_layer(role: Role, i: str) -> Role:
    def fill(site):
        return site.format(i=i) if site else site

    return Role(role.kind, fill(role.in_site), fill(role.out_site), fill(role.site), role.query)


def _prefixed(taps: Taps, prefix: str, model) -> Taps:
    """Taps name modules inside the base model; the model may be a head class or the bare one."""
    lead = f"{prefix}." if hasattr(model, prefix) else ""
    return Taps(
        embeddings=lead + taps.embeddings,
        layer=lead + taps.layer,
        attention_context=lead + taps.attention_context,
        ffn_activation=lead + taps.ffn_activation,
        pooler=(lead + taps.pooler) if taps.pooler else None,
        head_hidden=taps.head_hidden,
    )


_L = r"encoder\.layer\.(?P<i>\d+)\."
_COMMON_TAIL = (
    (_L + r"intermediate\.dense\.", Role("linear", "hidden", "ffn.{i}")),
    (_L + r"output\.dense\.", Role("linear", "ffn.{i}", "hidden")),
    (_L + r"output\.LayerNorm\.", Role("vector", site="hidden")),
    (r"pooler\.dense\.", Role("linear", "hidden", "pooler")),
    (r"^classifier\.dense\.", Role("linear", "hidden", "head")),  # RoBERTa / MPNet head
    (r"^classifier\.out_proj\.", Role("linear", "head", None)),
    (r"^classifier\.", Role("linear", "pooler", None)),  # BERT: reads the pooled vector
    (r"^qa_outputs\.", Role("linear", "hidden", None)),
)
_EMBEDDINGS = (
    (r"embeddings\.(word|position|token_type)_embeddings\.weight$", Role("embedding")),
    (r"embeddings\.LayerNorm\.", Role("vector", site="hidden")),
)

_BERT = WidthMap(
    "bert",
    rules=_EMBEDDINGS
    + (
        (_L + r"attention\.self\.query\.", Role("linear", "hidden", "attn.{i}", query=True)),
        (_L + r"attention\.self\.(key|value)\.", Role("linear", "hidden", "attn.{i}")),
        (_L + r"attention\.output\.dense\.", Role("linear", "attn.{i}", "hidden")),
        (_L + r"attention\.output\.LayerNorm\.", Role("vector", site="hidden")),
    )
    + _COMMON_TAIL,
    taps={
        "": Taps(
            embeddings="embeddings",
            layer="encoder.layer.{i}",
            attention_context="encoder.layer.{i}.attention.output.dense",
            ffn_activation="encoder.layer.{i}.output.dense",
            pooler="pooler",  # BERT's classifier reads the pooled vector
            head_hidden=None,
        ),
    },
)
_ROBERTA_TAPS = Taps(
    embeddings="embeddings",
    layer="encoder.layer.{i}",
    attention_context="encoder.layer.{i}.attention.output.dense",
    ffn_activation="encoder.layer.{i}.output.dense",
    pooler="pooler",
    head_hidden="classifier.out_proj",
)
_MPNET = WidthMap(
    "mpnet",
    rules=_EMBEDDINGS
    + (
        (_L + r"attention\.attn\.q\.", Role("linear", "hidden", "attn.{i}", query=True)),
        (_L + r"attention\.attn\.(k|v)\.", Role("linear", "hidden", "attn.{i}")),
        (_L + r"attention\.attn\.o\.", Role("linear", "attn.{i}", "hidden")),
        (_L + r"attention\.LayerNorm\.", Role("vector", site="hidden")),
        (r"encoder\.relative_attention_bias\.weight$", Role("copy")),
    )
    + _COMMON_TAIL,
    taps={
        "": Taps(
            embeddings="embeddings",
            layer="encoder.layer.{i}",
            attention_context="encoder.layer.{i}.attention.attn.o",
            ffn_activation="encoder.layer.{i}.output.dense",
            pooler="pooler",
            head_hidden="classifier.out_proj",
        ),
    },
    shared_head_tables=("relative_attention_bias",),
)
WIDTH_MAPS: dict[str, WidthMap] = {
    "bert": _BERT,
    "roberta": WidthMap("roberta", _BERT.rules, {"": _ROBERTA_TAPS}),
    "xlm-roberta": WidthMap("xlm-roberta", _BERT.rules, {"": _ROBERTA_TAPS}),
    "mpnet": _MPNET,
}


def width_map_for(model_type: str) -> WidthMap:
    try:
        return WIDTH_MAPS[model_type]
    except KeyError:
        raise UserError(
            f"APC: architecture '{model_type}' has no width mapping (its layers are not laid "
            f"out as the supported ones); width compression supports {', '.join(WIDTH_MAPS)}"
        ) from None
