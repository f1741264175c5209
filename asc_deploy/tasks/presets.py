"""Task presets and `build_task`: from a `TaskConfig` to a ready `Task`.

A preset knows a task's hub id, label names, columns, metric and the file names of the offline
copies in `../shared/data`; a user's own dataset goes through the same config with explicit
files, columns and labels. Where data comes from, in order: explicit train_file / eval_file,
`data_dir` (a folder holding the preset's files, or their parent), `dataset` (a hub id), the
preset's hub id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from asc_deploy.config import TaskConfig
from asc_deploy.data.readers import DataSource
from asc_deploy.errors import UserError
from asc_deploy.tasks.base import Task
from asc_deploy.tasks.classification import ClassificationTask
from asc_deploy.tasks.question_answering import QuestionAnsweringTask


@dataclass(frozen=True)
class Preset:
    family: str
    hub: str
    hub_config: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    # Column candidates: the hub name first, then the names the offline/GLUE files use.
    text_column: tuple[str, ...] = ()
    text_pair_column: tuple[str, ...] = ()
    label_column: tuple[str, ...] = ("label",)
    labels: tuple[str, ...] = ()
    skip_labels: tuple = ()
    local_folder: str = ""
    local_train: str | None = None
    local_eval: str | None = None
    local_note: str = ""
    missing_train_hint: str = "set task.train_file"
    version_2: bool = True
    extra: dict = field(default_factory=dict)


_NLI = ("entailment", "neutral", "contradiction")
PRESETS: dict[str, Preset] = {
    "sst2": Preset(
        "classification",
        "glue",
        "sst2",
        text_column=("sentence", "text"),
        labels=("negative", "positive"),
        local_folder="sst2",
        local_train="train.tsv",
        local_eval="dev.tsv",
    ),
    "mrpc": Preset(
        "classification",
        "glue",
        "mrpc",
        text_column=("sentence1", "#1 String"),
        text_pair_column=("sentence2", "#2 String"),
        label_column=("label", "Quality"),
        labels=("not_equivalent", "equivalent"),
        local_folder="mrpc",
        local_train="train.tsv",
        local_eval="dev.tsv",
    ),
    "rte": Preset(
        "classification",
        "glue",
        "rte",
        text_column=("sentence1",),
        text_pair_column=("sentence2",),
        labels=("entailment", "not_entailment"),
        local_folder="rte",
        local_train="train.parquet",
        local_eval="validation.parquet",
    ),
    "mnli": Preset(
        "classification",
        "glue",
        "mnli",
        eval_split="validation_matched",
        text_column=("premise", "sentence1"),
        text_pair_column=("hypothesis", "sentence2"),
        label_column=("label", "gold_label"),
        labels=_NLI,
        local_folder="mnli",
        local_train=None,
        local_eval="dev_matched.jsonl",
        local_note="MNLI dev-matched; no MNLI train split is available offline",
        missing_train_hint="no MNLI train split is available offline (only dev_matched.jsonl); "
        "pass task.train_file or use a hub dataset",
    ),
    "qqp": Preset(
        "classification",
        "glue",
        "qqp",
        text_column=("question1",),
        text_pair_column=("question2",),
        label_column=("label", "is_duplicate"),
        labels=("not_duplicate", "duplicate"),
        local_folder="qqp",
        local_train="train.tsv",
        local_eval="dev.tsv",
    ),
    "snli": Preset(
        "classification",
        "stanfordnlp/snli",
        None,
        text_column=("premise", "sentence1"),
        text_pair_column=("hypothesis", "sentence2"),
        label_column=("label", "gold_label"),
        labels=_NLI,
        skip_labels=(-1, "-1", "-"),
        local_folder="snli",
        local_train="train.jsonl",
        local_eval="dev.jsonl",
    ),
    "squad_v2": Preset(
        "question-answering",
        "rajpurkar/squad_v2",
        local_folder="squad_v2",
        local_train="train-v2.0.json",
        local_eval="dev-v2.0.json",
        missing_train_hint="no SQuAD 2.0 train split is available offline; set task.article_split "
        "to split dev-v2.0.json by article",
    ),
    "squad": Preset(
        "question-answering",
        "rajpurkar/squad",
        local_folder="squad",
        local_train="train-v1.1.json",
        local_eval="dev-v1.1.json",
        version_2=False,
    ),
}


def build_task(cfg: TaskConfig, project_root: Path | None = None) -> Task:
    """Resolve a task config (preset or a user's own data) into a Task, its last `cfg.holdout`
    training examples reserved for screening and the `cfg.eval_holdout` before them for
    evaluation; UserError if it cannot."""
    from asc_deploy.tasks.holdout import reserve

    return reserve(_build_task(cfg, project_root), cfg.holdout, cfg.eval_holdout)


def _build_task(cfg: TaskConfig, project_root: Path | None) -> Task:
    preset = _preset(cfg)
    family = preset.family if preset else cfg.family
    if family is None:
        raise UserError(
            "task: set task.preset or task.family (classification / question-answering)"
        )
    if preset and cfg.family and cfg.family != preset.family:
        raise UserError(
            f"task: preset {cfg.preset} is {preset.family}, but task.family says {cfg.family}"
        )
    root = Path(project_root) if project_root else Path.cwd()
    sources, note = _sources(cfg, preset, root)
    name = cfg.preset or _custom_name(cfg)
    limits = {"train": cfg.max_train_samples, "eval": cfg.max_eval_samples}
    hints = {"train": preset.missing_train_hint} if preset else {}
    if family == "question-answering":
        note = _article_note(note, cfg) if cfg.article_split else note
        return QuestionAnsweringTask(
            name,
            sources,
            qa=cfg.qa,
            version_2=preset.version_2 if preset else True,
            article_split=cfg.article_split,
            max_samples=limits,
            data_note=note,
            missing_split_hint=hints,
        )
    labels = cfg.labels or (list(preset.labels) if preset else None)
    if not labels:
        raise UserError(
            "task: a classification dataset needs task.labels (label names in class-index order)"
        )
    if not (cfg.text_column or (preset and preset.text_column)):
        raise UserError("task: set task.text_column (and task.text_pair_column for sentence pairs)")
    return ClassificationTask(
        name,
        sources,
        text_column=_columns(cfg.text_column, preset.text_column if preset else ()),
        text_pair_column=_columns(cfg.text_pair_column, preset.text_pair_column if preset else ())
        or None,
        label_column=_columns(cfg.label_column, preset.label_column if preset else ("label",)),
        label_names=labels,
        max_length=cfg.max_length,
        skip_labels=preset.skip_labels if preset else (),
        max_samples=limits,
        data_note=note,
        missing_split_hint=hints,
    )


def known_presets() -> list[str]:
    return sorted(PRESETS)


def _preset(cfg: TaskConfig) -> Preset | None:
    if cfg.preset is None:
        return None
    key = cfg.preset.lower().replace("-", "_")
    if key not in PRESETS:
        raise UserError(
            f"unknown task preset '{cfg.preset}'; known presets: {', '.join(known_presets())}"
        )
    return PRESETS[key]


def _columns(explicit: str | None, candidates: tuple[str, ...]) -> tuple[str, ...]:
    return (explicit,) if explicit else tuple(candidates)


def _custom_name(cfg: TaskConfig) -> str:
    for ref in (cfg.eval_file, cfg.train_file, cfg.dataset):
        if ref:
            return Path(ref).stem if cfg.dataset != ref else ref
    return "custom"


def _sources(cfg: TaskConfig, preset: Preset | None, root: Path) -> tuple[dict, str]:
    data_dir = _resolve(cfg.data_dir, root) if cfg.data_dir else None
    if data_dir is not None and not data_dir.is_dir():
        raise UserError(f"task.data_dir not found: {data_dir}")
    if cfg.train_file or cfg.eval_file:
        base = data_dir or root
        sources = {
            s: _resolve(f, base) if f else None
            for s, f in (("train", cfg.train_file), ("eval", cfg.eval_file))
        }
        return {s: DataSource(path=p) if p else None for s, p in sources.items()}, _files_note(
            sources
        )
    if data_dir is not None:
        if preset is None:
            raise UserError(
                "task: with task.data_dir and no preset, name the files "
                "(task.train_file / task.eval_file)"
            )
        return _preset_files(preset, data_dir, root)
    dataset = cfg.dataset or (preset.hub if preset else None)
    if dataset is None:
        raise UserError(
            "task: no data; set task.data_dir, task.train_file / eval_file or task.dataset"
        )
    config = cfg.dataset_config if cfg.dataset else preset.hub_config
    splits = (
        (cfg.train_split, cfg.eval_split)
        if cfg.dataset or not preset
        else (preset.train_split, preset.eval_split)
    )
    sources = {
        s: DataSource(dataset=dataset, config=config, split=sp)
        for s, sp in zip(("train", "eval"), splits, strict=True)
    }
    return (
        sources,
        f"hub dataset {dataset}{'/' + config if config else ''} ({splits[0]} / {splits[1]})",
    )


def _preset_files(preset: Preset, data_dir: Path, root: Path) -> tuple[dict, str]:
    folder = (
        data_dir / preset.local_folder if (data_dir / preset.local_folder).is_dir() else data_dir
    )
    eval_path = folder / preset.local_eval if preset.local_eval else None
    if eval_path is None or not eval_path.is_file():
        raise UserError(
            f"task: {preset.local_eval} not found in {folder}; "
            "point task.data_dir at the task's files"
        )
    train_path = folder / preset.local_train if preset.local_train else None
    sources = {
        "train": DataSource(path=train_path) if train_path and train_path.is_file() else None,
        "eval": DataSource(path=eval_path),
    }
    note = _files_note({"train": sources["train"] and train_path, "eval": eval_path}, root)
    return sources, f"{note}; {preset.local_note}" if preset.local_note else note


def _files_note(paths: dict, root: Path | None = None) -> str:
    parts = [f"{split} {_show(p, root)}" for split, p in paths.items() if p]
    return "local files: " + ", ".join(parts)


def _show(path: Path, root: Path | None) -> str:
    if root is None:
        return str(path)
    try:
        import os

        return os.path.relpath(path, root)
    except ValueError:
        return str(path)


def _article_note(note: str, cfg: TaskConfig) -> str:
    spec = cfg.article_split
    return (
        f"{note}; split by article (never by question): {spec.eval_fraction:.0%} of the articles "
        f"held out for eval, seed {spec.seed}"
    )


def _resolve(path: str | Path, base: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base / path).resolve()
