"""Distillation losses from the uncompressed model (the teacher) to a pruned one (the student).

Three terms, each weighted per recipe:
- soft targets: KL(teacher_T || student_T) * T^2 on the logits (Hinton et al.);
- hidden states: the student's hidden state j (0 = the embeddings' output, j >= 1 = after
  student layer j) is matched to the teacher's hidden state k, where student layer j was layer k
  of the original stack. `cosine` is 1 - cos(student, teacher) per token (DistilBERT's cosine
  loss), `mse` the mean squared difference over the hidden size; both averaged over the
  non-padding tokens, then over the matched states;
- attention maps: MSE between the attention probabilities of student layer j and teacher layer k
  (TinyBERT), over non-padding query and key positions, averaged over heads and matched layers.

No projection is learned: layer dropping keeps the width, so student and teacher states have the
same size. A width-compressed student (`asc-deploy narrow`) carries the frozen projection its
APC training started from (`width_projection.safetensors`, teacher width x student width), and
the teacher's states are compared through it. The layer map comes from the pruned model's
`pruning.json` (1-based removed/kept layers, kept layers in their original order), followed
back through earlier prunings to the original stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from asc_deploy.compress.apc import WIDTH_PROJECTION
from asc_deploy.compress.pruning import PRUNING_RECORD
from asc_deploy.errors import UserError
from asc_deploy.fsutil import read_json

HiddenLossKind = Literal["cosine", "mse"]
LayerPairs = list[tuple[int, int]]  # (student hidden-state index, teacher hidden-state index)


# -- the layer map --------------------------------------------------------------------------------
def layer_pairs(student_source: str | Path, student_layers: int, teacher_layers: int) -> LayerPairs:
    """Which teacher hidden state each student hidden state imitates, embeddings (0, 0) first.

    A student without `pruning.json` must have as many layers as the teacher (identity map).
    """
    record_path = Path(student_source) / PRUNING_RECORD
    if not record_path.is_file():
        if student_layers != teacher_layers:
            raise UserError(
                f"distillation: {student_source} has {student_layers} layers and the teacher "
                f"{teacher_layers}, but no {PRUNING_RECORD} says which layers it kept; "
                "distil a model made by `asc-deploy prune`, or turn the hidden/attention losses off"
            )
        return [(j, j) for j in range(student_layers + 1)]
    record = read_json(record_path)
    kept, original = _original_layers(record)
    if len(kept) != student_layers:
        raise UserError(
            f"distillation: {record_path} keeps {len(kept)} layers but the model has "
            f"{student_layers}; re-run the pruning step"
        )
    if original != teacher_layers:
        raise UserError(
            f"distillation: the student was pruned from a {original}-layer model but the teacher "
            f"has {teacher_layers} layers; distil from the model that was pruned"
        )
    return [(0, 0)] + [(j, k) for j, k in enumerate(kept, start=1)]


def _original_layers(record: dict) -> tuple[list[int], int]:
    """Kept layers as 1-based numbers of the first model in the pruning history, and its depth."""
    kept = list(record["kept_layers"])
    while "previous" in record:
        record = record["previous"]
        # `kept` numbers the layers of the model this record pruned, which kept record's layers.
        kept = [record["kept_layers"][k - 1] for k in kept]
    return kept, int(record["original_layers"])


def hidden_projection(student_source: str | Path):
    """The teacher-to-student hidden-state map of a width-compressed folder, or None."""
    path = Path(student_source) / WIDTH_PROJECTION
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(path))["hidden"]


# -- losses ---------------------------------------------------------------------------------------
def distillation_loss(student_logits, teacher_logits, temperature: float, mask=None):
    """KL(teacher_T || student_T) * T^2 averaged over rows; `mask` drops padded positions (QA)."""
    import torch.nn.functional as F

    if mask is not None:
        student_logits = student_logits.masked_fill(mask == 0, -1e4)
        teacher_logits = teacher_logits.masked_fill(mask == 0, -1e4)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_p_student, p_teacher, reduction="batchmean")
    return kl * temperature**2


def hidden_state_loss(
    student_states,
    teacher_states,
    pairs: LayerPairs,
    attention_mask,
    kind: HiddenLossKind,
    projection=None,
):
    """Mean over the matched states of the per-token loss averaged over non-padding tokens.

    `*_states` are the models' `hidden_states` tuples ((batch, tokens, hidden) each, index 0 the
    embeddings' output); `attention_mask` is (batch, tokens) with 1 for real tokens, or None;
    `projection` (teacher hidden x student hidden) maps a wider teacher's states first.
    """
    import torch.nn.functional as F

    if kind not in ("cosine", "mse"):
        raise ValueError(f"hidden-state loss kind must be cosine or mse, not {kind!r}")
    batch, tokens, _ = student_states[0].shape
    mask = _token_mask(attention_mask, batch, tokens, student_states[0])
    total = student_states[0].new_zeros(())
    for j, k in pairs:
        student, teacher = student_states[j], teacher_states[k]
        if projection is not None:
            teacher = teacher @ projection
        if kind == "cosine":
            per_token = 1 - F.cosine_similarity(student, teacher, dim=-1)
        else:
            per_token = (student - teacher).pow(2).mean(dim=-1)
        total = total + (per_token * mask).sum() / mask.sum()
    return total / len(pairs)


def attention_loss(student_attentions, teacher_attentions, pairs: LayerPairs, attention_mask):
    """MSE of attention probabilities between matched layers over non-padding query/key pairs.

    `*_attentions` are the models' `attentions` tuples ((batch, heads, tokens, tokens) each, index
    i = layer i + 1); the embeddings pair (0, 0) has no attention map and is skipped.
    """
    layers = [(j, k) for j, k in pairs if j > 0]
    first = student_attentions[0]
    batch, heads, tokens, _ = first.shape
    mask = _token_mask(attention_mask, batch, tokens, first)
    grid = mask[:, None, :, None] * mask[:, None, None, :]  # (batch, 1, query, key)
    count = grid.sum() * heads
    total = first.new_zeros(())
    for j, k in layers:
        squared = (student_attentions[j - 1] - teacher_attentions[k - 1]).pow(2)
        total = total + (squared * grid).sum() / count
    return total / len(layers) if layers else total


def _token_mask(attention_mask, batch: int, tokens: int, like):
    """(batch, tokens) float mask of real tokens; all ones when the batch has no padding mask."""
    if attention_mask is None:
        return like.new_ones(batch, tokens)
    return attention_mask.to(like.dtype)
