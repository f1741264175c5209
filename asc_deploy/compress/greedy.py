"""Greedy layer removal (SLEB, arXiv 2402.09025; greedy layer pruning, arXiv 2105.14839).

Repeatedly replace by the identity the layer whose replacement moves the model's output
distribution least from the uncompressed model's, measured as KL(original || candidate) on
training batches. Identity replacement is exactly what physical removal computes
(tests/test_surgery.py), so the layers chosen here are the layers to remove.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from asc_deploy.errors import UserError
from asc_deploy.models.adapters import adapter_for
from asc_deploy.models.surgery import IdentityLayer


@dataclass(frozen=True)
class GreedyStep:
    layer: int  # 1-based layer removed at this step
    kl: float  # mean KL to the original model with every layer so far replaced
    candidates: dict[int, float] = field(default_factory=dict)  # each candidate layer's KL

    def record(self) -> dict:
        return {
            "layer": self.layer,
            "kl": self.kl,
            "candidates": {str(k): v for k, v in self.candidates.items()},
        }


@contextmanager
def identity_layers(model, layer_indices: Sequence[int]) -> Iterator[None]:
    """Temporarily replace 0-based layers by the identity; the originals come back afterwards."""
    layers = adapter_for(model.config.model_type).layers(model)
    saved = {i: layers[i] for i in layer_indices}
    try:
        for i in saved:
            layers[i] = IdentityLayer()
        yield
    finally:
        for i, layer in saved.items():
            layers[i] = layer


def _log_distributions(outputs, attention_mask) -> list:
    """Log-probabilities of each output distribution, in float64 so tiny KLs keep their sign.

    Classification: over labels. QA: start and end positions, padding excluded.
    """
    import torch

    logits = getattr(outputs, "logits", None)
    if logits is not None:
        return [torch.log_softmax(logits.double(), dim=-1)]
    if getattr(outputs, "start_logits", None) is not None:
        padding = attention_mask == 0
        return [
            torch.log_softmax(x.double().masked_fill(padding, -torch.inf), dim=-1)
            for x in (outputs.start_logits, outputs.end_logits)
        ]
    raise UserError(
        "greedy layer selection needs a model with a classification or question-answering head"
    )


def _kl_rows(reference: list, candidate: list):
    """Per-row KL(reference || candidate), averaged over the output's distributions."""
    import torch

    total = 0
    for ref, cand in zip(reference, candidate, strict=True):
        # Masked positions are -inf in both: contribute 0, not NaN.
        terms = torch.where(torch.isinf(ref), 0.0, ref.exp() * (ref - cand))
        total = total + terms.sum(dim=-1)
    return total / len(reference)


def _forward(model, batch: Mapping) -> list:
    import torch

    inputs = {k: torch.as_tensor(v) for k, v in batch.items()}
    return _log_distributions(model(**inputs), inputs["attention_mask"])


def _mean_kl(model, batches: Sequence[Mapping], references: list[list]) -> float:
    total, rows = 0.0, 0
    for batch, reference in zip(batches, references, strict=True):
        kl = _kl_rows(reference, _forward(model, batch))
        total += float(kl.sum())
        rows += int(kl.shape[0])
    return total / rows


def greedy_removal(
    model, batches: Sequence[Mapping], count: int, progress=None
) -> tuple[list[int], list[GreedyStep]]:
    """Choose `count` 1-based layers greedily; returns them (sorted) and the path step by step.

    `batches`: dicts of model inputs (e.g. `tasks.base.collate` output) from the *training*
    split. Ties go to the lower layer, so the choice is deterministic. The model is left as given.
    """
    import torch

    if not batches:
        raise UserError("greedy layer selection got no batches; give it training examples")
    total = adapter_for(model.config.model_type).num_layers(model)
    model.eval()
    removed: list[int] = []  # 0-based, in the order chosen
    path: list[GreedyStep] = []
    with torch.no_grad():
        references = [_forward(model, batch) for batch in batches]
        for _ in range(count):
            candidates = {}
            for i in (i for i in range(total) if i not in removed):
                with identity_layers(model, [*removed, i]):
                    candidates[i + 1] = _mean_kl(model, batches, references)
                if progress is not None:
                    progress(1)
            layer = min(candidates, key=lambda k: (candidates[k], k))
            removed.append(layer - 1)
            path.append(GreedyStep(layer, candidates[layer], candidates))
    return sorted(i + 1 for i in removed), path


def training_batches(
    task, tokenizer, samples: int, batch_size: int = 32, seed: int = 42
) -> list[dict]:
    """A seeded sample of `samples` examples from the task's *training* split, encoded and batched.

    Only the training split is read: choosing layers on evaluation data would leak it into the
    comparison the evaluation is meant to judge.
    """
    from asc_deploy.compress.profiling import length_sorted_batches

    if samples < 1:
        raise UserError(f"greedy layer selection needs at least 1 sample, got {samples}")
    examples = task.load_examples("train")
    if samples > len(examples):  # a silent clamp would record a sample size never used
        raise UserError(
            f"greedy layer selection asks for {samples} samples but task {task.name} has "
            f"{len(examples)} training examples; ask for at most {len(examples)}"
        )
    if samples < len(examples):
        picked = sorted(random.Random(seed).sample(range(len(examples)), samples))
        examples = [examples[i] for i in picked]
    features = task.encode(tokenizer, examples)
    return list(length_sorted_batches(features, batch_size, tokenizer.pad_token_id))
