"""The run spec: one YAML file, validated with pydantic, errors pointing at the offending key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from asc_deploy.errors import UserError


class Strict(BaseModel):
    # A typo in a key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class QAConfig(Strict):
    max_length: int = 384
    stride: int = 128
    max_query_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0
    tune_null_threshold: bool = False  # also report the best threshold found on the eval set


class ArticleSplit(Strict):
    """Split one SQuAD file by article (never by question) into train and eval parts."""

    eval_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42


class TaskConfig(Strict):
    preset: str | None = None  # sst2, mrpc, rte, mnli, qqp, snli, squad_v2, squad
    family: Literal["classification", "question-answering"] | None = None
    dataset: str | None = None  # hub dataset id (with `dataset_config`) or a local folder
    dataset_config: str | None = None
    data_dir: Path | None = None
    train_file: str | None = None
    eval_file: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    labels: list[str] | None = None  # label names in class-index order
    max_length: int = 128
    qa: QAConfig = QAConfig()
    article_split: ArticleSplit | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None


class FinetuneConfig(Strict):
    """A fine-tuning recipe; presets: paper-nli, paper-paraphrase, paper-qa, cpu-fast."""

    preset: str | None = None
    epochs: float | None = None
    max_steps: int | None = None  # a step budget wins over epochs
    batch_size: int | None = None
    learning_rate: float | None = None
    optimizer: Literal["adam", "adamw"] | None = None
    weight_decay: float | None = None
    warmup_ratio: float | None = None
    grad_clip: float | None = None
    scheduler: Literal["none", "linear"] | None = None
    dynamic_padding: bool | None = None
    group_by_length: bool | None = None
    seed: int = 42
    distillation: bool = False
    distill_temperature: float = Field(2.0, gt=0)
    distill_alpha: float = Field(0.5, ge=0, le=1)  # soft targets; the task loss weighs 1 - alpha
    # Hidden-state loss vs the teacher layer each student layer was (0 = off); cosine or mse.
    distill_hidden_weight: float = Field(0.0, ge=0)
    distill_hidden_loss: Literal["cosine", "mse"] = "cosine"
    distill_attention_weight: float = Field(0.0, ge=0)  # TinyBERT attention-map MSE (0 = off)


class ASCConfig(Strict):
    thresholds: list[float] = [0.90, 0.85, 0.80]
    epsilon: float = 0.01
    profile_samples: int | None = None  # None = the whole training split, as the paper does
    batch_size: int = 32

    @field_validator("thresholds")
    @classmethod
    def _in_unit_interval(cls, values: list[float]) -> list[float]:
        for t in values:
            if not 0 < t <= 1:
                raise ValueError(f"threshold {t} is outside (0, 1]")
        return values


class OffTheShelfModel(Strict):
    name: str
    model: str  # hub id or local folder
    finetuned: bool = False  # True: already fine-tuned on this task, skip fine-tuning


class ComparisonsConfig(Strict):
    strategies: list[Literal["top", "bottom", "alternate", "random", "middle"]] = [
        "top",
        "bottom",
        "alternate",
        "random",
    ]
    random_seeds: list[int] = [42, 43, 44]
    # Extra numbers of layers for the baselines to remove, beyond ASC's counts (the paper also
    # reports BERT-base with six random layers removed).
    layer_counts: list[int] = []
    off_the_shelf: list[OffTheShelfModel] = []
    quantized_baselines: list[Literal["torch-dynamic-int8", "ort-dynamic-int8"]] = [
        "torch-dynamic-int8",
        "ort-dynamic-int8",
    ]


class ExportConfig(Strict):
    variants: list[Literal["fp32", "optimized", "int8-dynamic", "int8-static", "fp16"]] = [
        "fp32",
        "int8-dynamic",
    ]
    opset: int = 17
    isa: Literal["auto", "avx2", "avx512", "avx512_vnni", "arm64"] = "auto"
    calibration_samples: int = 128
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    validation_samples: int = 32
    # Which models become artifacts. Layer-choice baselines are off by default: a model with the
    # same number of layers as an ASC model has the same graph shape, so the same latency.
    models: list[Literal["reference", "asc", "strategy", "off-the-shelf"]] = [
        "reference",
        "asc",
        "off-the-shelf",
    ]


class BenchConfig(Strict):
    providers: list[str] = ["cpu"]
    batch_sizes: list[int] = [1, 8, 32]
    sequence_lengths: list[int] = [32, 128]
    inputs: Literal["fixed", "real"] = "fixed"
    intra_op_threads: int | None = None  # None = physical cores
    inter_op_threads: int = 1
    warmup: int = 5
    min_iterations: int = 20
    min_seconds: float = 1.0
    rounds: int = 3
    include_torch: bool = True
    tensorrt_fp16: bool = True  # TensorRT EP builds fp16 engines (profile: deploy/tensorrt.py)


class GatesConfig(Strict):
    max_accuracy_drop: float | None = None  # points, vs the uncompressed model
    min_speedup: float | None = None
    speedup_target: str = "cpu"  # provider
    speedup_shape: tuple[int, int] = (1, 128)  # batch, sequence
    max_latency_regression: float | None = None  # fraction, vs `baseline`
    baseline: Path | None = None  # a previous results.json
    max_size_mb: float | None = None
    accuracy_budget: float = 1.0  # points: the recommendation picks the fastest within this


class RunConfig(Strict):
    name: str = "run"
    output_dir: Path = Path("exports")
    model: str
    model_finetuned: bool = False  # False: the run fine-tunes `model` on the task first
    trust_remote_code: bool = False
    task: TaskConfig
    finetune: FinetuneConfig = FinetuneConfig(preset="cpu-fast")
    recovery: FinetuneConfig | None = None  # None: the same recipe as `finetune`
    asc: ASCConfig = ASCConfig()
    comparisons: ComparisonsConfig = ComparisonsConfig()
    export: ExportConfig = ExportConfig()
    bench: BenchConfig = BenchConfig()
    gates: GatesConfig = GatesConfig()


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: key '{key}': {first['msg']}{more}"


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config; relative paths resolve against the current folder."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}; pass a YAML run config")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of settings at the top level")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format_error(exc, str(path))) from exc
