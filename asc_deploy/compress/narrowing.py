"""Width compression end to end: sample the sites, start the projections, train APC, finalise.

`narrow_model` turns a (possibly layer-pruned) fine-tuned model folder into a narrower
`from_pretrained` folder of the same architecture, plus `width.json` (what was done) and
`width_projection.safetensors` (the frozen teacher-to-student hidden map that the final
distillation compares hidden states through). With `steps=0` nothing is trained: the selection
init finalised at once is one-shot structured pruning (the cheap variant, and the ablation that
shows what trained projections add).

The paper trains APC on MLM + NSP; the staged checkpoints carry neither head, so the objective
here is the task loss plus distillation from the fine-tuned uncompressed model (logits, and hidden
states through the frozen initial projection), as apc-method.md decides.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from asc_deploy.compress.apc import WIDTH_PROJECTION, WIDTH_RECORD, Widths
from asc_deploy.compress.pruning import PRUNING_RECORD
from asc_deploy.config import FinetuneConfig
from asc_deploy.errors import UserError
from asc_deploy.fsutil import atomic_dir, write_json_atomic
from asc_deploy.tasks.base import Task, collate

SCHEMA = "asc-deploy.width/1"


def importance_batches(task: Task, tokenizer, samples: int, batch_size: int = 32, seed: int = 0):
    """A seeded sample of the *training* split with its labels, batched as torch tensors."""
    import torch

    examples = task.load_examples("train")
    if samples < len(examples):
        picked = sorted(random.Random(seed).sample(range(len(examples)), samples))
        examples = [examples[i] for i in picked]
    features = task.encode(tokenizer, examples, for_training=True)
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        batch = collate([features[i] for i in order[start : start + batch_size]], pad, True)
        yield {k: torch.from_numpy(v) for k, v in batch.items()}


def narrow_model(
    source: str | Path,
    task: Task,
    widths: Widths,
    output_dir: Path,
    init: str = "sensitivity",
    biases: str = "none",
    steps: int = 0,
    recipe: FinetuneConfig | None = None,
    teacher: str | Path | None = None,
    train_original: bool = True,
    samples: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Narrow `source` to `widths` into `output_dir`; returns the width record."""
    import torch

    from asc_deploy.compress.apc_model import ApcModel
    from asc_deploy.compress.finetune import _load
    from asc_deploy.compress.width_init import build_bases, sample_sites
    from asc_deploy.compress.width_map import width_map_for
    from asc_deploy.models.loading import count_parameters

    if steps > 0 and recipe is None:
        raise UserError("narrow: APC training steps need a recipe (the recovery recipe)")
    started = time.perf_counter()
    torch.manual_seed(seed)
    model, tokenizer = _load(source, task, False)
    taps = width_map_for(model.config.model_type).taps_for(model)
    batches = importance_batches(task, tokenizer, samples, seed=seed)
    sample = sample_sites(model, taps, batches, want_activations=init in ("kmeans", "svd"))
    bases = build_bases(sample, model.config, widths, init, seed)
    apc = ApcModel(model, widths, bases, biases, train_original)
    projection = teacher_projection(source, bases["hidden"].down)
    training = (
        _train(apc, source, task, tokenizer, steps, recipe, teacher, projection, progress)
        if steps
        else {}
    )
    narrow = apc.finalise()
    record = {
        "schema": SCHEMA,
        "source": str(source),
        "task": task.name,
        "before": {
            "hidden": model.config.hidden_size,
            "ffn": model.config.intermediate_size,
            "heads": model.config.num_attention_heads,
        },
        "widths": asdict(widths),
        "init": init,
        "biases": biases,
        "steps": steps,
        "train_original": train_original,
        "importance_samples": samples,
        "heads_kept": {
            s.split(".")[1]: b.heads for s, b in sorted(bases.items()) if s.startswith("attn.")
        },
        "parameters_before": count_parameters(model),
        "parameters_after": count_parameters(narrow),
        "training": training,
        "seconds": round(time.perf_counter() - started, 2),
        "objective": "task loss + distillation from the fine-tuned model (no MLM/NSP heads)",
    }
    _save(narrow, tokenizer, projection, record, Path(source), output_dir)
    return record


def teacher_projection(source: str | Path, down):
    """The uncompressed teacher's hidden width to this model's: the source's own map (when it
    was narrowed before) followed by this narrowing's initial basis, frozen."""
    from asc_deploy.compress.distillation import hidden_projection

    earlier = hidden_projection(source)
    return down.detach().clone() if earlier is None else earlier @ down.detach()


def _train(
    apc, source, task: Task, tokenizer, steps: int, recipe, teacher, projection, progress
) -> dict:
    """APC's projections (and, with train_original, the original weights) on the task loss plus
    distillation, through the loop every fine-tune uses."""
    from asc_deploy.compress.distillation import layer_pairs
    from asc_deploy.compress.finetune import (
        _accepted,
        _load,
        _max_length,
        resolve_recipe,
        train_steps,
    )

    r = resolve_recipe(recipe.model_copy(update={"max_steps": steps}))
    teacher_model = _load(teacher, task, False)[0] if teacher is not None else None
    pairs = None
    if teacher_model is not None and r.distill_hidden_weight > 0:
        pairs = layer_pairs(
            source, apc.narrow.config.num_hidden_layers, teacher_model.config.num_hidden_layers
        )
    if teacher_model is None:
        r = type(r)(**{**asdict(r), "distillation": False, "distill_hidden_weight": 0.0})
    features = task.encode(tokenizer, task.load_examples("train"), for_training=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    run = train_steps(
        apc, teacher_model, features, r, pairs, pad, _max_length(task),
        _accepted(apc.narrow), progress, f"{task.name} (APC)", projection,
    )  # fmt: skip
    tail = run.losses[-min(len(run.losses), 20) :]
    return {
        "steps": len(run.losses),
        "seconds": round(run.seconds, 2),
        "first_loss": run.losses[0],
        "final_loss": sum(tail) / len(tail),
        "learning_rate": r.learning_rate,
        "batch_size": r.batch_size,
        "distilled": teacher_model is not None,
    }


def _save(narrow, tokenizer, projection, record: dict, source: Path, output_dir: Path) -> None:
    from safetensors.torch import save_file

    with atomic_dir(output_dir) as tmp:
        narrow.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_file({"hidden": projection.contiguous()}, str(tmp / WIDTH_PROJECTION))
        write_json_atomic(tmp / WIDTH_RECORD, record)
        if (source / PRUNING_RECORD).is_file():  # the layer map the final distillation needs
            shutil.copy2(source / PRUNING_RECORD, tmp / PRUNING_RECORD)
