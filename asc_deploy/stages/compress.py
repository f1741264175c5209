"""Compression stages: fine-tune the base model, profile it, choose layer sets, prune, recover."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from asc_deploy.config import OffTheShelfModel, WidthTarget
from asc_deploy.records import (
    Candidates,
    DepthTarget,
    ModelEntry,
    ModelFolder,
    Profile,
    Pruned,
    ScreenScore,
)
from asc_deploy.stages.core import Context, Settings, announce, stage
from asc_deploy.tasks.base import Task

if TYPE_CHECKING:  # numpy stays out of the import of this module
    from asc_deploy.compress.asc import DepthChoice


def model_folder(path: str | Path) -> ModelFolder:
    """A folder with its content hash; a hub id as it is."""
    from asc_deploy.fsutil import hash_folder

    folder = Path(path)
    return ModelFolder(path=str(path), hash=hash_folder(folder) if folder.is_dir() else None)


@stage(
    "finetune",
    reads=("model", "model_finetuned", "trust_remote_code", "task", "finetune"),
    record=ModelFolder,
)
def finetune_base(s: Settings, ctx: Context, task: Task) -> ModelFolder:
    """The uncompressed fine-tuned model: given as it is, or fine-tuned on the task here."""
    if s["model_finetuned"]:
        return model_folder(s["model"])

    announce(f"fine-tune {s['model']} on {task.name}")
    return _finetune(s, ctx, s["model"], task, "uncompressed")


def _finetune(s: Settings, ctx: Context, source: str, task: Task, name: str) -> ModelFolder:
    """`source` fine-tuned on the task with the base recipe into `<run>/models/<name>`."""
    from asc_deploy.compress.finetune import finetune

    out = finetune(
        source,
        task,
        s["finetune"],
        ctx.root / "models" / name,
        force="finetune" in ctx.force,
        trust_remote_code=s["trust_remote_code"],
    )
    return model_folder(out)


@stage(
    "profile",
    reads=("trust_remote_code", "task", "asc.profile_samples", "asc.batch_size"),
    record=Profile,
)
def profile(s: Settings, ctx: Context, model: ModelFolder, task: Task) -> Profile:
    """ASC's similarity matrix of the model's hidden states on the training split."""
    announce("ASC profile: layer similarity on the training split")
    return profile_model(
        model, task, s["asc.profile_samples"], s["asc.batch_size"], s["trust_remote_code"]
    )


def profile_model(
    model: ModelFolder,
    task: Task,
    samples: int | None,
    batch_size: int,
    trust_remote_code: bool,
) -> Profile:
    """The `profile` stage's record (also the `profile` verb's path): the matrix as stored,
    rounded, which is the one every selection reads."""
    from asc_deploy.compress.profiling import profile_task, similarity_record

    result, identity = profile_task(model.path, task, samples, batch_size, trust_remote_code)
    record = similarity_record(result, identity)
    return Profile(
        num_layers=record["num_layers"],
        matrix=record["matrix"],
        matrix_hash=record["matrix_hash"],
        model_hash=model.hash,
        examples=record["examples"],
        tokens=record["tokens"],
        document=record,
    )


@stage(
    "select",
    reads=(
        "trust_remote_code",
        "task",
        "asc.thresholds",
        "asc.epsilon",
        "asc.remove_layers",
        "comparisons.strategies",
        "comparisons.random_seeds",
        "comparisons.layer_counts",
        "comparisons.greedy_samples",
    ),
    record=Candidates,
)
def select_candidates(
    s: Settings, ctx: Context, profile: Profile, model: ModelFolder, task: Task
) -> Candidates:
    """Every layer set to build: ASC per threshold and per target depth, then each criterion at
    each of those depths (and `layer_counts`). Writes the similarity folder with the choices."""
    total = profile.num_layers
    selections, depths = select_asc(
        profile, s["asc.thresholds"], s["asc.epsilon"], s["asc.remove_layers"],
        ctx.root / "similarity",
    )  # fmt: skip
    models = _asc_entries(selections, total) + _depth_entries(depths.values(), total)
    counts = sorted({m.removed for m in models} | set(s["comparisons.layer_counts"]))
    counts = [c for c in counts if 1 <= c < total]
    criteria, evidence = _criteria_entries(s, ctx, profile, model, task, counts)
    return Candidates(
        selections={str(t): layers for t, layers in selections.items()},
        depth_targets=[
            DepthTarget(count=d.count, threshold=d.threshold, layers=d.layers, reason=d.reason)
            for d in depths.values()
        ],
        models=models + criteria,
        evidence=evidence,
    )


def select_asc(
    profile: Profile,
    thresholds: list[float],
    epsilon: float,
    remove_layers: list[int],
    folder: Path,
) -> tuple[dict[float, list[int]], dict[int, DepthChoice]]:
    """ASC's layers per threshold and per target depth, written with the matrix to `folder`
    (the `select` stage's and the `profile` verb's path). Both read the stored, rounded matrix:
    an entry near a threshold's edge then falls on the same side for `run`, the verb and
    `prune --similarity`."""
    import numpy as np

    from asc_deploy.compress.asc import selections_for_thresholds, thresholds_for_depths
    from asc_deploy.compress.profiling import write_similarity

    matrix = np.asarray(profile.matrix)
    selections = selections_for_thresholds(matrix, thresholds, epsilon)
    depths = thresholds_for_depths(matrix, remove_layers, epsilon)
    write_similarity(folder, profile.document, selections, epsilon, depths)
    return selections, depths


def _asc_entries(selections: dict[float, list[int]], total: int) -> list[ModelEntry]:
    """One model per distinct ASC layer set; lower thresholds choosing the same set join it."""
    from asc_deploy.progress import status_line

    entries: dict[tuple[int, ...], ModelEntry] = {}
    for threshold, removed in selections.items():
        name = f"asc-{threshold:.2f}"
        if not removed:
            status_line(f"{name}: no layer reaches the threshold; nothing to remove")
        elif len(removed) >= total:
            status_line(f"{name}: every layer is redundant at this threshold; skipped (keep one)")
        elif tuple(removed) in entries:
            entries[tuple(removed)].thresholds.append(threshold)
        else:
            entries[tuple(removed)] = _entry(name, "asc", removed, total, threshold=threshold)
    return list(entries.values())


def _depth_entries(depths, total: int) -> list[ModelEntry]:
    from asc_deploy.progress import status_line

    entries = []
    for d in depths:
        if d.layers is None:
            status_line(f"asc at {d.count} removed layers: {d.reason}")
            continue
        name = f"asc-k{d.count}"
        note = f"ASC at a target depth: threshold {d.threshold:.4f} removes exactly {d.count}"
        entries.append(_entry(name, "asc", d.layers, total, threshold=d.threshold, note=note))
    return entries


def _criteria_entries(s, ctx, profile, model, task, counts) -> tuple[list[ModelEntry], dict]:
    import numpy as np

    from asc_deploy.compress.criteria import select_layers

    similarity, total = np.asarray(profile.matrix), profile.num_layers
    greedy_order = _greedy_order(s, model, task, total, max(counts)) if counts else []
    entries, evidence = [], {}
    for count in counts:
        for name in s["comparisons.strategies"]:
            seeds = s["comparisons.random_seeds"] if name == "random" else [None]
            for seed in seeds:
                label = f"{name}-{count}" + (f"-s{seed}" if seed is not None else "")
                if name == "greedy":  # greedy's choice for c layers is its first c steps
                    layers = sorted(greedy_order[:count])
                else:
                    choice = select_layers(
                        name, total, count, seed=42 if seed is None else seed,
                        similarity=similarity,
                    )  # fmt: skip
                    layers = choice.layers
                    if choice.evidence:
                        evidence[label] = choice.evidence
                entries.append(
                    _entry(label, "strategy", layers, total, seed=seed, strategy=name,
                           group=f"{name}-{count}")
                )  # fmt: skip
    return entries, evidence


def _greedy_order(s, model: ModelFolder, task: Task, total: int, count: int) -> list[int]:
    """Greedy's removal order up to `count` layers, scored on a seeded sample of the *training*
    split (never the evaluation split); [] when greedy is not asked for."""
    if "greedy" not in s["comparisons.strategies"]:
        return []
    from asc_deploy.compress.criteria import select_layers
    from asc_deploy.compress.greedy import training_batches
    from asc_deploy.models.loading import load_model_and_tokenizer

    announce(f"greedy layer selection on {s['comparisons.greedy_samples']} training examples")
    head = task.family  # a task's family names the head its model carries
    loaded, tokenizer = load_model_and_tokenizer(
        model.path, head, label_names=task.label_names or None,
        trust_remote_code=s["trust_remote_code"],
    )  # fmt: skip
    batches = training_batches(task, tokenizer, s["comparisons.greedy_samples"])
    choice = select_layers("greedy", total, count, model=loaded, batches=batches)
    return list(choice.evidence["order"])


def _entry(name, kind, removed, total, **fields) -> ModelEntry:
    threshold = fields.pop("threshold", None)
    return ModelEntry(
        name=name,
        kind=kind,
        path="",
        layers=total - len(removed),
        removed_layers=list(removed),
        group=fields.pop("group", name),
        strategy=fields.pop("strategy", "asc"),
        threshold=threshold,
        thresholds=[threshold] if threshold is not None else [],
        **fields,
    )


@stage("prune", reads=(), record=Pruned)
def prune(
    s: Settings,
    ctx: Context,
    model: ModelFolder,
    removed: list[int],
    head: str,
    folder: str | None = None,
) -> Pruned:
    """Physically remove 1-based `removed` layers into `<run>/models/pruned/<layers>` (or
    `<run>/models/pruned/<folder>`: a narrowed model's layers, width-first)."""
    from asc_deploy.compress.pruning import prune_model

    dest = ctx.root / "models" / "pruned" / (folder or "-".join(map(str, removed)))
    announce(f"prune: remove layers {removed}")
    record = prune_model(model.path, removed, dest, "explicit", head=head)
    return Pruned(
        path=str(dest),
        hash=model_folder(dest).hash,
        removed_layers=record["removed_layers"],
        parameters_before=record["parameters_before"],
        parameters_after=record["parameters_after"],
    )


@stage(
    "narrow",
    reads=(
        "task", "recovery", "apc.init", "apc.biases", "apc.steps", "apc.learning_rate",
        "apc.train_original", "apc.samples",
    ),
    record=Pruned,
)  # fmt: skip
def narrow(
    s: Settings,
    ctx: Context,
    source: Pruned | ModelFolder,
    shape: WidthTarget,
    teacher: ModelFolder,
    task: Task,
    folder: str,
) -> Pruned:
    """APC: `source` (the uncompressed model or a pruned one) narrowed to `shape` into
    `<run>/models/narrowed/<folder>`; APC's training steps distil from `teacher`."""
    from asc_deploy.compress.apc import resolve_widths
    from asc_deploy.compress.narrowing import narrow_model
    from asc_deploy.models.loading import load_config

    widths = resolve_widths(load_config(source.path), **shape.model_dump(), key="apc")
    steps = s["apc.steps"]
    announce(f"narrow {folder}: {widths.label}, {s['apc.init']} init, {steps} APC steps")
    recipe = s["recovery"].model_copy(update={"learning_rate": s["apc.learning_rate"]})
    dest = ctx.root / "models" / "narrowed" / folder
    record = narrow_model(
        source.path, task, widths, dest, init=s["apc.init"], biases=s["apc.biases"],
        steps=steps, recipe=recipe, teacher=teacher.path if recipe.distillation else None,
        train_original=s["apc.train_original"], samples=s["apc.samples"],
    )  # fmt: skip
    return Pruned(
        path=str(dest),
        hash=model_folder(dest).hash,
        removed_layers=list(getattr(source, "removed_layers", [])),
        parameters_before=record["parameters_before"],
        parameters_after=record["parameters_after"],
    )


@stage("recover", reads=("trust_remote_code", "task", "recovery"), record=ModelFolder)
def recover(
    s: Settings, ctx: Context, pruned: Pruned, teacher: ModelFolder, task: Task, name: str
) -> ModelFolder:
    """Fine-tune a pruned model again, distilled from the uncompressed one when the recipe says."""
    from asc_deploy.compress.finetune import finetune

    recipe = s["recovery"]
    announce(f"recover {name} ({len(pruned.removed_layers)} layers removed)")
    out = finetune(
        pruned.path,
        task,
        recipe,
        ctx.root / "models" / name,
        teacher=teacher.path if recipe.distillation else None,
        force="recover" in ctx.force,
        trust_remote_code=s["trust_remote_code"],
    )
    return model_folder(out)


@stage("finetune", reads=("trust_remote_code", "task", "finetune"), record=ModelFolder)
def finetune_off_the_shelf(
    s: Settings, ctx: Context, spec: OffTheShelfModel, task: Task
) -> ModelFolder:
    """An off-the-shelf compressed model, fine-tuned on the task with the base recipe."""
    if spec.finetuned:
        return model_folder(spec.model)
    announce(f"fine-tune off-the-shelf {spec.name} ({spec.model})")
    return _finetune(s, ctx, spec.model, task, spec.name)


@stage(
    "screen",
    reads=("trust_remote_code", "task", "recovery", "screening"),
    record=ScreenScore,
)
def screen(
    s: Settings, ctx: Context, pruned: Pruned, teacher: ModelFolder, task: Task
) -> ScreenScore:
    """A short recovery on the training split, scored on examples reserved from all training."""
    from asc_deploy.compress.finetune import finetune, resolve_recipe, total_steps
    from asc_deploy.models.loading import load_model_and_tokenizer
    from asc_deploy.tasks.evaluation import evaluate_torch
    from asc_deploy.tasks.holdout import held_out_scoring

    screening, recipe = s["screening"], s["recovery"]
    score = held_out_scoring(task, screening.samples, "screening.samples")
    budget = total_steps(resolve_recipe(recipe), len(task.load_examples("train")))
    steps = max(1, round(budget * screening.fraction))
    folder = Path(pruned.path).name  # the layers ("1-3"), or a narrowed model's "1-3+apc-h288"
    announce(f"screen {folder}: {steps} recovery steps")
    out = finetune(
        pruned.path,
        task,
        recipe.model_copy(update={"max_steps": steps}),
        ctx.root / "models" / "screening" / folder,
        teacher=teacher.path if recipe.distillation else None,
        force="screen" in ctx.force,
        trust_remote_code=s["trust_remote_code"],
    )
    head = task.family  # a task's family names the head its model carries
    model, tokenizer = load_model_and_tokenizer(out, head, label_names=task.label_names or None)
    result = evaluate_torch(model, tokenizer, score, with_cls=False)
    return ScreenScore(
        score=result.metrics[task.primary_metric], steps=steps, samples=screening.samples
    )
