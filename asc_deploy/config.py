"""The run spec: one YAML file, validated with pydantic, errors pointing at the offending key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from asc_deploy.errors import UserError
from asc_deploy.fsutil import hash_json


class Strict(BaseModel):
    # A typo in a key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class QAConfig(Strict):
    max_length: int = Field(384, ge=8)
    stride: int = Field(128, ge=1)
    max_query_length: int = Field(64, ge=1)
    n_best: int = Field(20, ge=1)
    max_answer_length: int = Field(30, ge=1)
    null_threshold: float = 0.0
    tune_null_threshold: bool = False  # also report the best threshold found on the eval set


class ArticleSplit(Strict):
    """Split one SQuAD file by article (never by question) into train and eval parts."""

    eval_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42


class TaskConfig(Strict):
    # Cache keys hold the data's content hash (Task.data_identity), not where the folder is; and
    # the eval reserve's size (tasks/holdout.py) there too, not here, so that a run without one
    # keeps the keys it had before the setting existed.
    cache_exclude: ClassVar[set[str]] = {"data_dir", "eval_holdout"}

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
    max_length: int = Field(128, ge=8)
    qa: QAConfig = QAConfig()
    article_split: ArticleSplit | None = None
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)
    # The training split's last `holdout` examples (QA: from an article boundary) are never
    # trained on: screening and the int8-mixed search score on them (asc_deploy/tasks/holdout.py).
    holdout: int = Field(0, ge=0)
    # The `eval_holdout` training examples before those are never trained on either: every
    # evaluation also scores on them (at the served batch), and the recommendation and the
    # accuracy gate decide there, because a dev set of a few hundred examples cannot resolve a
    # 1-point drop; the official eval split stays the published-comparable number. 0: off.
    eval_holdout: int = Field(0, ge=0)

    @field_validator("eval_holdout")
    @classmethod
    def _pairs_need_two(cls, value: int) -> int:
        # The paired comparisons the decisions rest on need two examples: one would fail only
        # after the training.
        if value == 1:
            raise ValueError("a paired comparison needs at least 2 examples; use 0 (off) or >= 2")
        return value

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, values: list[str] | None) -> list[str] | None:
        # A repeated name maps two classes to one index: every example of the second is scored
        # against the first (accuracy 0.0 without a word).
        for name in values or []:
            if values.count(name) > 1:
                raise ValueError(f"label '{name}' appears twice; name each class once")
        return values


# compress/finetune.py's RECIPES, by name: the config refuses an unknown one when it is read,
# without importing the trainer (a test keeps the two equal).
FINETUNE_PRESETS = ("cpu-fast", "paper-nli", "paper-paraphrase", "paper-qa")


class FinetuneConfig(Strict):
    """A fine-tuning recipe; presets: paper-nli, paper-paraphrase, paper-qa, cpu-fast."""

    preset: str | None = None
    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)  # a step budget wins over epochs
    batch_size: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
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

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in FINETUNE_PRESETS:
            raise ValueError(f"unknown preset '{value}'; known: {', '.join(FINETUNE_PRESETS)}")
        return value

    @model_validator(mode="after")
    def _layer_losses_need_a_teacher(self) -> FinetuneConfig:
        # Only a distilled run gets a teacher: without it the run would fail after the pruning.
        if (self.distill_hidden_weight or self.distill_attention_weight) and not self.distillation:
            raise ValueError(
                "distill_hidden_weight / distill_attention_weight compare with the teacher; "
                "set distillation: true (distill_alpha: 0 keeps the soft targets off)"
            )
        return self


class ASCConfig(Strict):
    thresholds: list[float] = [0.90, 0.85, 0.80]
    epsilon: float = 0.01
    profile_samples: int | None = None  # None = the whole training split, as the paper does
    batch_size: int = 32
    # ASC at a target depth: for each k, the highest threshold whose selection removes exactly k.
    remove_layers: list[int] = []

    @field_validator("thresholds")
    @classmethod
    def _in_unit_interval(cls, values: list[float]) -> list[float]:
        for t in values:
            if not 0 < t <= 1:
                raise ValueError(f"threshold {t} is outside (0, 1]")
        return values

    @field_validator("remove_layers")
    @classmethod
    def _at_least_one(cls, values: list[int]) -> list[int]:
        for k in values:
            if k < 1:
                raise ValueError(f"remove_layers {k}: remove at least 1 layer")
        return values


class WidthTarget(Strict):
    """One narrower shape (apc-method.md): unset widths keep the model's own."""

    hidden: int | None = Field(None, ge=1)  # residual width = attention width
    ffn: int | None = Field(None, ge=1)
    heads: int | None = Field(None, ge=1)  # kept heads; head size = hidden / heads

    @model_validator(mode="after")
    def _narrows_something(self) -> WidthTarget:
        if self.hidden is None and self.ffn is None and self.heads is None:
            raise ValueError("a width target names at least one of hidden, ffn, heads")
        return self


class APCConfig(Strict):
    """Width compression (APC) beside depth: each target width combined with the uncompressed
    model and with each depth's screened winners; `hidden` / `ffn` / `heads` at the top level are
    one more target (the issue's `apc: {hidden, ffn, heads, init, biases, steps}` form)."""

    targets: list[WidthTarget] = []
    hidden: int | None = Field(None, ge=1)
    ffn: int | None = Field(None, ge=1)
    heads: int | None = Field(None, ge=1)
    init: Literal["sensitivity", "random", "kmeans", "svd"] = "sensitivity"
    biases: Literal["none", "ud", "all"] = "none"  # b_U + b_D ("ud"), and B too ("all")
    # APC training steps before finalising; 0 = the selection init finalised at once (one-shot
    # structured pruning), then the recovery's distillation trains the finalised model.
    steps: int = Field(0, ge=0, le=100_000)
    learning_rate: float = Field(5e-5, gt=0, le=1)  # APC steps (the paper's 5e-5)
    train_original: bool = True  # the paper trains the original weights with the projections
    samples: int = Field(256, ge=8, le=100_000)  # training examples for importance / activations
    # Removed-layer counts each width combines with (0 = the uncompressed model); None: 0 and
    # every depth the run builds.
    depths: list[int] | None = None
    order: Literal["depth-first", "width-first"] = "depth-first"

    @model_validator(mode="after")
    def _shorthand_is_a_target(self) -> APCConfig:
        if any(v is not None for v in (self.hidden, self.ffn, self.heads)):
            shorthand = WidthTarget(hidden=self.hidden, ffn=self.ffn, heads=self.heads)
            if shorthand not in self.targets:
                self.targets = [shorthand, *self.targets]
        return self

    @field_validator("depths")
    @classmethod
    def _non_negative(cls, values: list[int] | None) -> list[int] | None:
        for d in values or []:
            if d < 0:
                raise ValueError(f"depths {d}: a removed-layer count is 0 or more")
        return values


class OffTheShelfModel(Strict):
    name: str
    model: str  # hub id or local folder
    finetuned: bool = False  # True: already fine-tuned on this task, skip fine-tuning


# The names compress/criteria.py registers a criterion under, in its order (a test holds the two
# equal): named here so the config is checked without importing numpy and the criteria.
CRITERION_NAMES = (
    "top",
    "bottom",
    "alternate",
    "middle",
    "random",
    "explicit",
    "block-influence",
    "angular-block",
    "greedy",
)


class ComparisonsConfig(Strict):
    # Layer-selection criteria (asc_deploy.compress.criteria), each removing as many layers as ASC.
    strategies: list[str] = ["top", "bottom", "alternate", "random"]
    greedy_samples: int = Field(256, ge=1)  # training examples the greedy criterion scores on
    random_seeds: list[int] = [42, 43, 44]
    # Extra numbers of layers for the baselines to remove, beyond ASC's counts (the paper also
    # reports BERT-base with six random layers removed).
    layer_counts: list[int] = []
    off_the_shelf: list[OffTheShelfModel] = []
    quantized_baselines: list[Literal["torch-dynamic-int8", "ort-dynamic-int8"]] = [
        "torch-dynamic-int8",
        "ort-dynamic-int8",
    ]

    @field_validator("strategies")
    @classmethod
    def _known_criteria(cls, values: list[str]) -> list[str]:
        known = [name for name in CRITERION_NAMES if name != "explicit"]  # explicit has no count
        for name in values:
            if name not in known:
                raise ValueError(f"unknown strategy '{name}'; choose from {', '.join(known)}")
        return values


class ScreeningConfig(Strict):
    """Successive halving over candidate layer sets: every distinct set gets a short recovery
    (`fraction` of the recovery's step budget) on the training split minus its last `samples`
    examples, is scored on those, and only the best `keep` per depth go on to full recovery."""

    fraction: float = Field(0.25, gt=0, lt=1)
    keep: int = Field(1, ge=1)
    samples: int = Field(512, ge=2)  # of the task.holdout examples


class ExportConfig(Strict):
    variants: list[
        Literal["fp32", "optimized", "int8-dynamic", "int8-static", "int8-mixed", "fp16"]
    ] = [
        "fp32",
        "int8-dynamic",
    ]
    opset: int = Field(17, ge=14, le=20)  # what the exporter writes for these encoders
    isa: Literal["auto", "avx2", "avx512", "avx512_vnni", "arm64"] = "auto"
    calibration_samples: int = Field(128, ge=1)
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True  # one int8 weight scale per output column (dynamic, static, mixed)
    # int8-mixed: keep the most sensitive layers fp32 until the artifact is within `int8_budget`
    # metric points of fp32 on `mixed_samples` of the task.holdout examples (never trained on,
    # never the eval split), on a dynamic or static int8 base (fp16 is its own variant).
    int8_budget: float = Field(1.0, gt=0, allow_inf_nan=False)
    mixed_samples: int = Field(512, ge=1)
    mixed_mode: Literal["dynamic", "static"] = "dynamic"
    # Evaluation examples the export is validated on (a spread of lengths) and real inputs
    # saved beside the artifact for benchmarking with real lengths.
    validation_samples: int = Field(32, ge=2)
    sample_inputs: int = Field(256, ge=1)
    # Which models become artifacts. Layer-choice baselines are off by default: a model with the
    # same number of layers as an ASC model has the same graph shape, so the same latency.
    models: list[Literal["reference", "asc", "strategy", "off-the-shelf", "width"]] = [
        "reference",
        "asc",
        "off-the-shelf",
        "width",
    ]


PositiveInts = Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]


def _canonical_providers(values: list[str]) -> list[str]:
    """Each provider's canonical name (cpu, cuda, tensorrt), duplicates dropped."""
    from asc_deploy.providers import canonical_provider

    return list(dict.fromkeys(canonical_provider(v) for v in values))


# The serving scenarios' settings live here, not in measure/scenarios.py (which runs them), so
# the run config is checked without importing the measuring code.
SCENARIOS = ("SingleStream", "Server", "Offline")


class ScenarioConfig(BaseModel):
    """`bench.scenarios` in the run config; every value is recorded with the results."""

    model_config = ConfigDict(extra="forbid")

    run: list[Literal["SingleStream", "Server", "Offline"]] = []  # empty: no scenarios
    min_duration_s: float = Field(10.0, gt=0)  # LoadGen's minimum test duration, every scenario
    # Server's p99 early-stopping check needs about 460 queries even when none is late.
    min_query_count: int = Field(1024, ge=1)
    probe_duration_s: float = Field(1.0, gt=0)  # SingleStream probe that sizes Server/Offline
    latency_bound_ms: float = Field(50.0, gt=0)  # Server: p99 latency bound
    server_target_qps: float | None = Field(None, gt=0)  # one run at this rate instead of a search
    server_start_qps: float | None = Field(None, gt=0)  # None: half the SingleStream rate
    server_min_qps: float = Field(1.0, gt=0)
    server_max_qps: float = Field(10000.0, gt=0)
    server_tolerance: float = Field(0.05, gt=0)  # stop when (INVALID - VALID) / VALID is below
    server_max_runs: int = Field(10, ge=1)
    server_instances: int = Field(1, ge=1)  # sessions serving the queue, one thread each
    max_batch_size: int = Field(1, ge=1)  # Server dynamic batching (1: none)
    max_queue_delay_ms: float = Field(0.0, ge=0)  # how long a query may wait for its batch
    offline_instances: int = Field(1, ge=1)
    offline_batch_size: int = Field(32, ge=1)
    offline_expected_qps: float | None = Field(None, gt=0)  # None: from the SingleStream rate
    threads_per_instance: int | None = Field(None, ge=1)  # None: bench threads / instances
    log_dir: Path | None = None  # keep LoadGen's own logs here, a folder per run

    @field_validator("run", mode="before")
    @classmethod
    def _known_names(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        return [scenario_name(v) if isinstance(v, str) else v for v in value]

    @model_validator(mode="after")
    def _search_range(self) -> ScenarioConfig:
        if self.server_min_qps >= self.server_max_qps:
            raise ValueError(
                f"server_min_qps ({self.server_min_qps}) must be below server_max_qps "
                f"({self.server_max_qps})"
            )
        return self

    def record(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        out["config_hash"] = hash_json(out)
        return out


def scenario_name(name: str) -> str:
    """'server' -> 'Server'; an unknown name is a ValueError naming the known ones."""
    for known in SCENARIOS:
        if name.lower() == known.lower():
            return known
    raise ValueError(f"unknown scenario '{name}'; use one of {', '.join(SCENARIOS)}")


class BenchConfig(Strict):
    providers: list[str] = Field(["cpu"], min_length=1)
    batch_sizes: PositiveInts = [1, 8, 32]
    sequence_lengths: PositiveInts = [32, 128]
    inputs: Literal["fixed", "real"] = "fixed"
    intra_op_threads: int | None = Field(None, ge=1)  # None = physical cores
    inter_op_threads: int = Field(1, ge=1)
    warmup: int = Field(5, ge=0)
    min_iterations: int = Field(20, ge=1)
    min_seconds: float = Field(1.0, ge=0)
    rounds: int = Field(3, ge=1)
    # Round p50 spread that flags a cell noisy, at least: a bare session.run loop timed in the
    # same rounds raises it on a host that is noisier when idle (measure/noise.py).
    noise_threshold: float = Field(0.10, gt=0, lt=1)
    noise_retries: int = Field(2, ge=0, le=10)  # extra rounds for cells that are still noisy
    include_torch: bool = True
    tensorrt_fp16: bool = True  # TensorRT EP builds fp16 engines (profile: measure/tensorrt.py)
    # Serving scenarios measured with MLPerf LoadGen (none unless `scenarios.run` names them).
    scenarios: ScenarioConfig = ScenarioConfig()

    @field_validator("providers")
    @classmethod
    def _canonical(cls, values: list[str]) -> list[str]:
        return _canonical_providers(values)


class QpsGateConfig(Strict):
    """`gates.min_qps_at_bound`: the recommended artifact's LoadGen Server QPS at a p99 bound."""

    provider: str = "cpu"
    latency_bound_ms: float = Field(gt=0)  # must equal bench.scenarios.latency_bound_ms
    min_qps: float | None = Field(None, gt=0)  # absolute queries per second, or
    min_ratio: float | None = Field(None, gt=0)  # times the uncompressed model's QPS

    @field_validator("provider")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return _canonical_providers([value])[0]

    @model_validator(mode="after")
    def _one_limit(self) -> QpsGateConfig:
        if (self.min_qps is None) == (self.min_ratio is None):
            raise ValueError("give exactly one of min_qps or min_ratio")
        return self


Decision = Literal["non-inferior", "point"]


class GatesConfig(Strict):
    max_accuracy_drop: float | None = Field(None, ge=0)  # points, vs the uncompressed model
    min_speedup: float | None = Field(None, gt=0)
    speedup_target: str = "cpu"  # provider
    speedup_shape: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (1, 128)
    # The speed verdict's paired rounds (measure/speed_trial.py): rounds it may add after the
    # first 7 while the bounds still straddle min_speedup (0: decide after 7).
    max_extra_rounds: int = Field(9, ge=0, le=60)
    # A round whose bare loop runs this many times slower than the bench's was under load, which
    # moves the ratio itself: it is left out of the verdict.
    load_limit: float = Field(1.5, gt=1)
    max_latency_regression: float | None = Field(None, ge=0)  # fraction, vs `baseline`
    baseline: Path | None = None  # a previous results.json
    max_size_mb: float | None = Field(None, gt=0)
    min_qps_at_bound: QpsGateConfig | None = None  # needs bench.scenarios.run to include Server
    # Points: the recommendation picks the fastest artifact within this of the reference.
    accuracy_budget: float = Field(1.0, ge=0)
    # What "within" means for the budget and max_accuracy_drop (report/decision.py): the paired
    # difference's one-sided 95% lower bound (non-inferior), or its point estimate.
    decision: Decision = "non-inferior"
    # Share of predictions that may differ between batch 1 and a server's batch before the
    # report flags a variant "batch-dependent" (a flag, not a gate).
    batch_flip_bound: float = Field(0.005, ge=0, le=1)

    @field_validator("speedup_target")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return _canonical_providers([value])[0]


class StageResources(Strict):
    """What one task of a stage asks the Ray scheduler for (a task waits until a node has it)."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_gb: float | None = Field(None, gt=0)  # Ray's `memory` request; None: no request


EXECUTOR_STAGES = ("finetune", "profile", "select", "prune", "narrow", "screen", "recover",
                   "evaluate", "export", "bench")  # fmt: skip


class ExecutorConfig(Strict):
    """Where the stages run: `local` (in this process, one after another) or `ray` (independent
    stages as tasks on a Ray cluster; the output folder must be the same path on every node)."""

    kind: Literal["local", "ray"] = "local"
    # `auto`: the cluster this machine belongs to (RAY_ADDRESS, else the one `ray start` made
    # here); `HOST:PORT`: that head's GCS address; `local`: a private one-machine Ray instance.
    address: str = "auto"
    # Per-stage requests, e.g. {finetune: {num_gpus: 1}}; an unnamed stage asks for one CPU.
    resources: dict[str, StageResources] = {}
    # Custom Ray resources naming bench hosts (`ray start --resources '{"target:cpu-avx512": 1}'`):
    # the bench runs once on a node holding each, one measurement at a time per node.
    # Empty: the bench runs on this machine, as with the local executor.
    targets: list[str] = []
    max_retries: int = Field(3, ge=0)  # reruns of a task whose node or worker died

    @field_validator("resources")
    @classmethod
    def _known_stages(cls, values: dict[str, StageResources]) -> dict[str, StageResources]:
        for name in values:
            if name not in EXECUTOR_STAGES:
                raise ValueError(
                    f"unknown stage '{name}' in executor.resources; stages: "
                    f"{', '.join(EXECUTOR_STAGES)}"
                )
        return values

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("ray://"):
            raise ValueError(
                "Ray Client addresses (ray://) are not supported: run asc-deploy on a node of "
                "the cluster with address auto or HOST:PORT"
            )
        if value not in ("auto", "local"):
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"address '{value}': use auto, local or HOST:PORT (6379)")
        return value

    @field_validator("targets")
    @classmethod
    def _distinct_targets(cls, values: list[str]) -> list[str]:
        for name in values:
            if not name or name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(
                    f"target '{name}' is not a custom resource; name one a bench host was "
                    "started with, e.g. target:cpu-avx512"
                )
        return list(dict.fromkeys(values))


class RunConfig(Strict):
    name: str = "run"
    output_dir: Path = Path("exports")
    model: str
    model_finetuned: bool = False  # False: the run fine-tunes `model` on the task first
    trust_remote_code: bool = False
    task: TaskConfig
    finetune: FinetuneConfig = FinetuneConfig(preset="cpu-fast")
    recovery: FinetuneConfig | None = None  # None: the same recipe as `finetune`
    screening: ScreeningConfig | None = None  # None: every candidate gets full recovery
    asc: ASCConfig = ASCConfig()
    apc: APCConfig = APCConfig()  # width compression; no targets = depth only
    comparisons: ComparisonsConfig = ComparisonsConfig()
    export: ExportConfig = ExportConfig()
    bench: BenchConfig = BenchConfig()
    gates: GatesConfig = GatesConfig()
    executor: ExecutorConfig = ExecutorConfig()  # where the stages run (local or ray)

    @model_validator(mode="after")
    def _recovery_defaults_to_finetune(self) -> RunConfig:
        if self.recovery is None:
            self.recovery = self.finetune.model_copy()
        return self

    @model_validator(mode="after")
    def _decisions_have_held_out_examples(self) -> RunConfig:
        """Screening and the int8-mixed search score on the reserve: without one they would
        fail only after the fine-tuning."""
        asks = {}
        if self.screening is not None:
            asks["screening.samples"] = self.screening.samples
        if "int8-mixed" in self.export.variants:
            asks["export.mixed_samples"] = self.export.mixed_samples
        for key, samples in asks.items():
            if samples > self.task.holdout:
                raise ValueError(
                    f"{key} ({samples}) scores on training examples reserved from fine-tuning, "
                    f"but task.holdout reserves {self.task.holdout}; set task.holdout to at "
                    f"least {samples}"
                )
        return self

    @model_validator(mode="after")
    def _gates_can_be_checked(self) -> RunConfig:
        """A speedup gate the bench settings cannot measure would fail only after all the
        training."""
        gates, bench = self.gates, self.bench
        if gates.min_qps_at_bound is not None:
            _qps_gate_can_be_checked(gates.min_qps_at_bound, bench)
        if gates.min_speedup is None:
            return self
        if gates.speedup_target not in bench.providers:
            raise ValueError(
                f"gates.speedup_target {gates.speedup_target} is not in bench.providers "
                f"{bench.providers}; add it there or change the target"
            )
        batch, sequence = gates.speedup_shape
        if batch not in bench.batch_sizes or sequence not in bench.sequence_lengths:
            raise ValueError(
                f"gates.speedup_shape {batch}x{sequence} is not measured (bench.batch_sizes "
                f"{bench.batch_sizes}, bench.sequence_lengths {bench.sequence_lengths}); add it"
            )
        return self


def _qps_gate_can_be_checked(gate: QpsGateConfig, bench: BenchConfig) -> None:
    scenarios = bench.scenarios
    if "Server" not in scenarios.run:
        raise ValueError(
            "gates.min_qps_at_bound needs the Server scenario measured; add Server to "
            "bench.scenarios.run"
        )
    if gate.provider not in bench.providers:
        raise ValueError(
            f"gates.min_qps_at_bound.provider {gate.provider} is not in bench.providers "
            f"{bench.providers}; add it there or change the provider"
        )
    if gate.latency_bound_ms != scenarios.latency_bound_ms:
        raise ValueError(
            f"gates.min_qps_at_bound.latency_bound_ms {gate.latency_bound_ms:g} differs from "
            f"bench.scenarios.latency_bound_ms {scenarios.latency_bound_ms:g}; make them equal"
        )


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
