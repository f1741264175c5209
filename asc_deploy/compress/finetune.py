"""One trainer for the base fine-tune and the recovery fine-tune after pruning.

Recipes resolve a `FinetuneConfig` (a preset plus explicit overrides) into concrete settings.
Optional knowledge distillation from a teacher (the uncompressed model) adds weighted terms to
the task loss: a soft-target KL divergence to the teacher's logits (temperature T, scaled by T^2
so gradients keep their size; start and end logits for QA), a hidden-state loss (cosine or MSE)
and an attention-map loss between each student layer and the teacher layer it was
(`distillation.py`). Runs are seeded and deterministic on CPU, and cached: the output folder
records a hash of (model folder, training examples' content, encoding settings, recipe, layer
map, teacher), and a rerun with the same inputs returns at once.
"""

from __future__ import annotations

import math
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asc_deploy.compress.distillation import (
    WIDTH_PROJECTION,
    LayerPairs,
    attention_loss,
    distillation_loss,
    hidden_projection,
    hidden_state_loss,
    layer_pairs,
)
from asc_deploy.config import FinetuneConfig
from asc_deploy.errors import UserError
from asc_deploy.fsutil import atomic_dir, hash_folder, hash_json, read_json, write_json_atomic
from asc_deploy.tasks.base import Task, collate

SCHEMA = "asc-deploy.finetune/1"
MEGABATCH = 50  # length grouping sorts within windows of this many batches, as HF's sampler does


@dataclass(frozen=True)
class Recipe:
    """A fully resolved fine-tuning recipe: no field left open."""

    preset: str | None
    epochs: float
    max_steps: int | None
    batch_size: int
    learning_rate: float
    optimizer: str
    weight_decay: float
    warmup_ratio: float
    grad_clip: float | None
    scheduler: str
    dynamic_padding: bool
    group_by_length: bool
    seed: int
    distillation: bool
    distill_temperature: float
    distill_alpha: float  # soft targets weigh alpha, the task loss 1 - alpha
    distill_hidden_weight: float  # 0 = off
    distill_hidden_loss: str  # cosine | mse
    distill_attention_weight: float  # 0 = off

    @property
    def matches_layers(self) -> bool:
        """True when a term compares student layers with teacher layers (needs the layer map)."""
        return self.distill_hidden_weight > 0 or self.distill_attention_weight > 0


_PAPER = dict(weight_decay=0.0, warmup_ratio=0.0, grad_clip=None, scheduler="none", max_steps=None)
# Paper recipes (asc-method.md) keep their hyper-parameters; dynamic padding is numerically the
# same as padding to the maximum length (padding is masked), so it stays on for speed.
RECIPES: dict[str, dict[str, Any]] = {
    "paper-nli": {
        **_PAPER,
        "epochs": 5,
        "batch_size": 32,
        "learning_rate": 1e-5,
        "optimizer": "adam",
    },
    "paper-paraphrase": {
        **_PAPER,
        "epochs": 10,
        "batch_size": 32,
        "learning_rate": 1e-5,
        "optimizer": "adam",
    },
    "paper-qa": {
        **_PAPER,
        "epochs": 3,
        "batch_size": 32,
        "learning_rate": 3e-5,
        "optimizer": "adamw",
        "warmup_ratio": 0.1,
        "grad_clip": 1.0,
        "scheduler": "linear",
    },
    "cpu-fast": {
        "epochs": 1,
        "max_steps": 600,
        "batch_size": 32,
        "learning_rate": 1e-4,
        "optimizer": "adamw",
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "grad_clip": 1.0,
        "scheduler": "linear",
        "group_by_length": True,
    },
}
_DEFAULTS = {"dynamic_padding": True, "group_by_length": False}


def resolve_recipe(cfg: FinetuneConfig) -> Recipe:
    """Preset values, overridden by every field the config sets explicitly."""
    name = cfg.preset or "cpu-fast"
    if name not in RECIPES:
        raise UserError(
            f"unknown fine-tuning preset '{name}'; known presets: {', '.join(sorted(RECIPES))}"
        )
    values = {**_DEFAULTS, **RECIPES[name]}
    values.update({k: v for k, v in cfg.model_dump().items() if v is not None and k != "preset"})
    recipe = Recipe(
        preset=name, **{k: values[k] for k in Recipe.__dataclass_fields__ if k != "preset"}
    )
    _check(recipe)
    return recipe


def _check(r: Recipe) -> None:
    # FinetuneConfig bounds the same fields, but `model_copy(update=...)` (CLI overrides) skips
    # pydantic validation, so the resolved recipe is checked again here.
    problems = [
        (r.batch_size < 1, f"batch_size must be >= 1 (got {r.batch_size})"),
        (r.learning_rate <= 0, f"learning_rate must be > 0 (got {r.learning_rate})"),
        (
            r.max_steps is not None and r.max_steps < 1,
            f"max_steps must be >= 1 (got {r.max_steps})",
        ),
        (r.max_steps is None and r.epochs <= 0, f"epochs must be > 0 (got {r.epochs})"),
        (not 0 <= r.warmup_ratio < 1, f"warmup_ratio must be in [0, 1) (got {r.warmup_ratio})"),
        (not 0 <= r.distill_alpha <= 1, f"distill_alpha must be in [0, 1] (got {r.distill_alpha})"),
        (
            r.distill_temperature <= 0,
            f"distill_temperature must be > 0 (got {r.distill_temperature})",
        ),
        (
            r.distill_hidden_weight < 0,
            f"distill_hidden_weight must be >= 0 (got {r.distill_hidden_weight})",
        ),
        (
            r.distill_hidden_loss not in ("cosine", "mse"),
            f"distill_hidden_loss must be cosine or mse (got {r.distill_hidden_loss!r})",
        ),
        (
            r.distill_attention_weight < 0,
            f"distill_attention_weight must be >= 0 (got {r.distill_attention_weight})",
        ),
    ]
    for bad, message in problems:
        if bad:
            raise UserError(f"finetune: {message}")


# -- batching -------------------------------------------------------------------------------------
def total_steps(recipe: Recipe, num_examples: int) -> int:
    if recipe.max_steps is not None:
        return recipe.max_steps
    return max(1, math.ceil(recipe.epochs * num_examples / recipe.batch_size))


def plan_batches(lengths: list[int], recipe: Recipe, steps: int) -> list[list[int]]:
    """Index lists for `steps` batches: seeded shuffles, epoch after epoch.

    With length grouping, each window of MEGABATCH batches is sorted by length before it is cut
    into batches (so padding is small), and the batches are shuffled again so that a run does
    not see its long batches in one block.
    """
    rng = random.Random(recipe.seed)
    size = recipe.batch_size
    batches: list[list[int]] = []
    while len(batches) < steps:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        epoch = [order[i : i + size] for i in range(0, len(order), size)]
        if recipe.group_by_length:
            window = size * MEGABATCH
            epoch = []
            for start in range(0, len(order), window):
                chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
                epoch.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
            rng.shuffle(epoch)
        batches.extend(epoch)
    return batches[:steps]


def pad_to_width(
    batch: dict[str, np.ndarray], width: int, pad_token_id: int
) -> dict[str, np.ndarray]:
    """Pad model inputs to a fixed width (the fixed max-length baseline)."""
    out = dict(batch)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        if name in batch and batch[name].shape[1] < width:
            pad = pad_token_id if name == "input_ids" else 0
            extra = np.full(
                (batch[name].shape[0], width - batch[name].shape[1]), pad, dtype=np.int64
            )
            out[name] = np.concatenate([batch[name], extra], axis=1)
    return out


# -- losses ---------------------------------------------------------------------------------------
def _distill_term(out, teacher_out, recipe: Recipe, attention_mask):
    if "logits" in out and out.get("logits") is not None:
        return distillation_loss(out.logits, teacher_out.logits, recipe.distill_temperature)
    start = distillation_loss(
        out.start_logits, teacher_out.start_logits, recipe.distill_temperature, attention_mask
    )
    end = distillation_loss(
        out.end_logits, teacher_out.end_logits, recipe.distill_temperature, attention_mask
    )
    return (start + end) / 2


# -- the trainer ----------------------------------------------------------------------------------
def finetune(
    model_source: str | Path,
    task: Task,
    recipe: FinetuneConfig,
    output_dir: Path,
    teacher: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    trust_remote_code: bool = False,
) -> Path:
    """Fine-tune `model_source` on the task's train split into `output_dir`; returns output_dir.

    Skipped (returns at once) when `output_dir` already holds a run with the same cache key.
    """
    r = resolve_recipe(recipe)
    if (r.distillation or r.matches_layers) and teacher is None:
        raise UserError(
            "finetune: distillation is on but no teacher model was given (--distill-from)"
        )
    if teacher is not None and not r.distillation:
        r = Recipe(**{**asdict(r), "distillation": True})
    pairs = _layer_map(model_source, teacher, r, trust_remote_code)
    output_dir = Path(output_dir)
    examples = task.load_examples("train")
    key, identity = _cache_key(model_source, task, examples, r, teacher, pairs)
    if not force and _cached(output_dir, key):
        if progress:
            from asc_deploy.progress import status_line

            status_line(f"{output_dir}: reusing the cached run (same model, data and recipe)")
        return output_dir

    _seed_everything(r.seed)
    model, tokenizer = _load(model_source, task, trust_remote_code)
    teacher_model = _load(teacher, task, trust_remote_code)[0] if teacher is not None else None
    if r.distill_attention_weight > 0:
        # Fused (SDPA) attention never materialises the probabilities the attention loss needs.
        # Models on transformers' attention interface switch here; the older BERT-family
        # classes cannot switch (transformers warns) but fall back to eager when asked for them.
        for m in (model, teacher_model):
            if m.config._attn_implementation != "eager":
                m.set_attn_implementation("eager")
    features = task.encode(tokenizer, examples, for_training=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    run = train_steps(
        model, teacher_model, features, r, pairs, pad_id, _max_length(task),
        _accepted(model), progress, task.name, projection=_projection(model_source, pairs),
    )  # fmt: skip
    losses, terms, tokens, seconds = run.losses, run.terms, run.tokens, run.seconds
    summary = _summary(
        r, key, identity, model_source, teacher, task, losses, seconds, tokens, len(features)
    )
    summary["distill_layer_map"] = pairs
    summary["loss_terms"] = {name: _first_and_final(values) for name, values in terms.items()}
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "finetune.json", summary)
    return output_dir


@dataclass
class TrainRun:
    losses: list[float]
    terms: dict[str, list[float]]
    tokens: int
    seconds: float


def train_steps(
    model, teacher_model, features, r: Recipe, pairs, pad_id: int, width: int, accepted,
    progress: bool, name: str, projection=None,
) -> TrainRun:  # fmt: skip
    """The training loop shared by fine-tuning and APC: `r`'s batches, loss, optimiser, schedule.

    `projection` (teacher width x student width) maps the teacher's hidden states into a narrower
    student's width for the hidden-state loss (APC's frozen initial projection)."""
    import torch

    steps = total_steps(r, len(features))
    batches = plan_batches([len(f["input_ids"]) for f in features], r, steps)
    optimizer = _optimizer(model, r)
    scheduler = _scheduler(optimizer, r, steps)
    losses: list[float] = []
    terms: dict[str, list[float]] = {}
    tokens = 0
    model.train()
    started = time.perf_counter()
    with _TrainProgress(progress, steps, name) as bar:
        for indices in batches:
            batch = collate([features[i] for i in indices], pad_id, with_targets=True)
            if not r.dynamic_padding:
                batch = pad_to_width(batch, width, pad_id)
            inputs = {k: torch.from_numpy(v) for k, v in batch.items() if k in accepted}
            loss, parts = _step_loss(model, teacher_model, inputs, r, pairs, projection)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if r.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            for term, value in parts.items():
                terms.setdefault(term, []).append(value)
            tokens += int(batch["input_ids"].size)
            bar.update(losses[-1], len(indices), time.perf_counter() - started)
    model.eval()
    return TrainRun(losses, terms, tokens, time.perf_counter() - started)


def _step_loss(
    model, teacher_model, inputs: dict, r: Recipe, pairs: LayerPairs | None, projection=None
):
    """The weighted training loss and each unweighted term's value (for the record)."""
    import torch

    wanted = {
        "output_hidden_states": r.distill_hidden_weight > 0,
        "output_attentions": r.distill_attention_weight > 0,
    }
    if teacher_model is None:
        out = model(**inputs)
        return out.loss, {"task": float(out.loss.detach())}
    out = model(**inputs, **wanted)
    model_inputs = {
        k: v for k, v in inputs.items() if k not in ("labels", "start_positions", "end_positions")
    }
    with torch.no_grad():
        teacher_out = teacher_model(**model_inputs, **wanted)
    mask = inputs.get("attention_mask")
    weighted = [(1 - r.distill_alpha, "task", out.loss)]
    if r.distill_alpha > 0:
        weighted.append((r.distill_alpha, "soft", _distill_term(out, teacher_out, r, mask)))
    if r.distill_hidden_weight > 0:
        hidden = hidden_state_loss(
            out.hidden_states,
            teacher_out.hidden_states,
            pairs,
            mask,
            r.distill_hidden_loss,
            projection,
        )
        weighted.append((r.distill_hidden_weight, "hidden", hidden))
    if r.distill_attention_weight > 0:
        attention = attention_loss(out.attentions, teacher_out.attentions, pairs, mask)
        weighted.append((r.distill_attention_weight, "attention", attention))
    loss = sum(weight * term for weight, _, term in weighted)
    return loss, {name: float(term.detach()) for _, name, term in weighted}


def _layer_map(model_source, teacher, r: Recipe, trust_remote_code: bool) -> LayerPairs | None:
    """The student-to-teacher hidden-state map when a term needs it, checked before training."""
    if not r.matches_layers:
        return None
    from asc_deploy.models.loading import load_config

    student = load_config(model_source, trust_remote_code)
    master = load_config(teacher, trust_remote_code)
    narrowed = hidden_projection(model_source) is not None
    if student.hidden_size != master.hidden_size and not narrowed:
        raise UserError(
            f"finetune: the student's hidden size {student.hidden_size} differs from the "
            f"teacher's {master.hidden_size} and it has no {WIDTH_PROJECTION} (made by "
            "`asc-deploy narrow`); hidden-state and attention losses need a map between widths"
        )
    if r.distill_attention_weight > 0 and (
        student.num_attention_heads != master.num_attention_heads
    ):
        raise UserError(
            f"finetune: the student keeps {student.num_attention_heads} attention heads and the "
            f"teacher has {master.num_attention_heads}; the attention-map loss needs the same "
            "heads (set distill_attention_weight: 0)"
        )
    return layer_pairs(model_source, student.num_hidden_layers, master.num_hidden_layers)


def _projection(model_source, pairs: LayerPairs | None):
    """The narrowed student's frozen teacher-to-student hidden map, when a loss reads states."""
    return hidden_projection(model_source) if pairs is not None else None


def _first_and_final(values: list[float]) -> dict[str, float]:
    tail = values[-min(len(values), 20) :]
    return {"first": values[0], "final": sum(tail) / len(tail)}


def _load(source, task: Task, trust_remote_code: bool):
    from asc_deploy.models.loading import load_model_and_tokenizer

    if task.family == "classification":
        return load_model_and_tokenizer(
            str(source),
            "classification",
            label_names=list(task.label_names),
            trust_remote_code=trust_remote_code,
        )
    return load_model_and_tokenizer(
        str(source), "question-answering", trust_remote_code=trust_remote_code
    )


def _optimizer(model, r: Recipe):
    import torch

    # The usual BERT practice: no weight decay on biases and LayerNorm weights.
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": r.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if r.optimizer == "adam":
        # Plain Adam as the authors used it (no decoupled decay; L2 only if asked for).
        return torch.optim.Adam(groups, lr=r.learning_rate)
    return torch.optim.AdamW(groups, lr=r.learning_rate)


def _scheduler(optimizer, r: Recipe, steps: int):
    import torch

    warmup = int(r.warmup_ratio * steps)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if r.scheduler == "linear":
            return max(0.0, (steps - step) / max(1, steps - warmup))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _max_length(task: Task) -> int:
    qa = getattr(task, "qa", None)
    return qa.max_length if qa is not None else int(getattr(task, "max_length", 128))


def _accepted(model) -> set[str]:
    import inspect

    params = inspect.signature(model.forward).parameters
    names = (
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "labels",
        "start_positions",
        "end_positions",
    )
    return {n for n in names if n in params}


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- caching and the record -----------------------------------------------------------------------
def _source_identity(source: str | Path | None) -> str | None:
    if source is None:
        return None
    path = Path(source).expanduser()
    return f"folder:{hash_folder(path)}" if path.is_dir() else f"hub:{source}"


def _cache_key(
    model_source, task: Task, examples, r: Recipe, teacher, pairs: LayerPairs | None = None
) -> tuple[str, dict]:
    """The run's hash and the data identity to record.

    The data is keyed by content (the examples' hash, the source files' names and hashes), never
    by where it lies: the task's data note shows paths relative to the working folder, so keying
    on it retrained the same run when it was started from another folder. The note is recorded.
    """
    encoding = {"max_length": getattr(task, "max_length", None)}
    if getattr(task, "qa", None) is not None:
        encoding["qa"] = task.qa.model_dump()
    identity = {
        "task": task.name,
        "examples": len(examples),
        "examples_hash": hash_json(examples),
        "source": task.data_identity("train") if hasattr(task, "data_identity") else None,
        "labels": list(task.label_names),
        "encoding": encoding,
    }
    key = hash_json(
        {
            "schema": SCHEMA,
            "model": _source_identity(model_source),
            "teacher": _source_identity(teacher),
            "data": identity,
            "recipe": asdict(r),
            "distill_layer_map": pairs,
        }
    )
    return key, {**identity, "data_note": task.data_note}


def _cached(output_dir: Path, key: str) -> bool:
    record = output_dir / "finetune.json"
    if not record.is_file() or not (output_dir / "config.json").is_file():
        return False
    try:
        return read_json(record).get("cache_key") == key
    except ValueError:
        return False


def _summary(
    r, key, identity, model_source, teacher, task, losses, seconds, tokens, n_features
) -> dict:
    import torch
    import transformers

    tail = losses[-min(len(losses), 20) :]
    stride = max(1, len(losses) // 50)
    return {
        "schema": SCHEMA,
        "cache_key": key,
        "model_source": str(model_source),
        "teacher": str(teacher) if teacher is not None else None,
        "task": task.name,
        "data": identity,
        "recipe": asdict(r),
        "steps": len(losses),
        "train_features": n_features,
        "examples_seen": len(losses) * r.batch_size,
        "epochs_covered": len(losses) * r.batch_size / n_features,
        "seconds": seconds,
        "examples_per_s": len(losses) * r.batch_size / seconds if seconds else None,
        "tokens_per_s": tokens / seconds if seconds else None,
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "loss_curve": [[i + 1, losses[i]] for i in range(0, len(losses), stride)],
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "python": platform.python_version(),
    }


class _TrainProgress:
    """The running loss and examples/s: a rich bar on a terminal, periodic lines in a log."""

    def __init__(self, enabled: bool, steps: int, name: str) -> None:
        from asc_deploy.progress import interactive, quiet

        self.steps, self.name = steps, name
        self.mode = "off" if not enabled else "bar" if interactive() and not quiet() else "lines"
        self.seen = self.step = 0
        self.smoothed: float | None = None

    def __enter__(self) -> _TrainProgress:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn(f"fine-tune {self.name}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} ex/s"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.bar.start()
            self.task_id = self.bar.add_task("train", total=self.steps, loss="-", rate="-")
        elif self.mode == "lines":
            from asc_deploy.progress import ProgressLines, quiet

            self.lines = ProgressLines(
                f"fine-tune {self.name}",
                self.steps,
                noun="step",
                rate_unit=None,
                periodic=not quiet(),
            )
        return self

    def update(self, loss: float, examples: int, elapsed: float) -> None:
        self.seen += examples
        self.step += 1
        self.smoothed = loss if self.smoothed is None else 0.9 * self.smoothed + 0.1 * loss
        rate = f"{self.seen / elapsed:.1f}" if elapsed > 0 else "-"
        if self.mode == "bar":
            self.bar.update(self.task_id, advance=1, loss=f"{self.smoothed:.4f}", rate=rate)
        elif self.mode == "lines":
            self.lines.update(self.step, f"loss {self.smoothed:.4f}", f"{rate} ex/s")

    def __exit__(self, exc_type, *exc) -> None:
        if self.mode == "bar":
            self.bar.stop()
        elif self.mode == "lines" and exc_type is None:
            self.lines.finish()
