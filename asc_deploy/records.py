"""The records that flow between stages and into the report, as pydantic models.

Every file the suite writes and reads back (results.json, bench.json, stage records) is validated
into these types when read, so a field the pipeline never writes cannot be assumed downstream,
a NaN never passes for a number, and derived values (an evaluation's delta) are recomputed from
the records they derive from instead of being trusted. docs/results-schema.md describes the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from asc_deploy.errors import UserError

RESULTS_SCHEMA = "asc-deploy.results/1"
BENCH_SCHEMA = "asc-deploy.bench/1"
BENCH_SET_SCHEMA = "asc-deploy.bench-set/1"  # `asc-deploy bench-merge`: several bench runs

ModelKind = Literal["reference", "asc", "strategy", "off-the-shelf", "quantized", "width"]
KIND_ORDER: tuple[str, ...] = (
    "reference", "asc", "quantized", "off-the-shelf", "strategy", "width",
)  # fmt: skip
VARIANT_ORDER: tuple[str, ...] = (
    "torch",
    "torch-dynamic-int8",
    "fp32",
    "optimized",
    "int8-dynamic",
    "int8-per-channel",
    "int8-mixed",
    "int8-static",
    "fp16",
)


class Record(BaseModel):
    # A typo or an invented field is an error; NaN and infinity are never numbers here.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


class Open(BaseModel):
    """Facts about the environment whose keys vary by host and library version."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


# -- the study's models ---------------------------------------------------------------------------
class Screening(Record):
    """A candidate's short recovery, scored on held-out training examples."""

    score: float  # the task's primary metric on the held-out training slice
    steps: int
    samples: int
    continued: bool  # among the best `keep` of its depth: recovered fully and evaluated


class WidthShape(Record):
    hidden: int
    ffn: int
    heads: int


class Width(Record):
    """A width-compressed (APC) model's shape and how it was made."""

    shape: WidthShape
    before: WidthShape  # the uncompressed model's
    init: str
    biases: str
    steps: int  # APC training steps before finalising (0: structured pruning)
    order: str  # depth-first | width-first
    narrows: str  # the model whose layers it keeps ("uncompressed", or a depth candidate)


class ModelEntry(Record):
    """One model of the comparison: its place in the study and its from_pretrained folder."""

    name: str
    kind: ModelKind
    path: str
    layers: int = Field(ge=1)
    removed_layers: list[int] = []
    group: str | None = None
    strategy: str | None = None  # the criterion that chose the layers ("asc", "top", ...)
    threshold: float | None = None  # ASC: the threshold that removed these layers
    thresholds: list[float] = []  # ASC: every configured threshold that chose these layers
    seed: int | None = None
    parameters: int | None = None
    distilled: bool = False
    note: str | None = None
    screening: Screening | None = None
    # Another criterion chose the same layers first: this entry shares that model's recovered
    # folder, evaluations and artifacts, so it is measured once, under that model's name.
    same_as: str | None = None
    width: Width | None = None  # width-compressed (kind "width"): its narrower shape

    @property
    def removed(self) -> int:
        return len(self.removed_layers)


# -- evaluation -----------------------------------------------------------------------------------
class CalibrationBin(Record):
    lower: float
    upper: float
    count: int
    accuracy: float | None
    confidence: float | None


class Calibration(Record):
    ece: float
    mce: float
    brier: float
    bins: list[CalibrationBin] = []


class Fidelity(Record):
    """How far a model still behaves like the uncompressed one (measure/fidelity.py)."""

    examples: int
    agreement: float | None = None
    error_jaccard: float | None = None
    calibration: Calibration | None = None
    knn_agreement: dict[str, float] | None = None  # None: no [CLS] vectors (ONNX graphs)
    notes: list[str] = []


class BatchedRun(Record):
    """The same evaluation at the largest batch a server forms, requests in arrival order."""

    batch_size: int = Field(ge=1)
    metrics: dict[str, float]
    primary: float | None
    predictions: str
    flips: int = Field(ge=0)  # examples predicted differently than at the served batch


class Discordant(Record):
    """McNemar's discordant pairs and its exact two-sided p-value."""

    b: int = Field(ge=0)  # reference right, other wrong
    c: int = Field(ge=0)  # reference wrong, other right
    p_value: float


class PairedStatistics(Record):
    """One metric of an evaluation against the reference on the same examples, in points
    (measure/statistics.py's PairedComparison, as `to_dict` writes it)."""

    metric: str
    n: int = Field(ge=2)
    reference: float
    other: float
    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    ni_low: float  # the one-sided `ni_confidence` lower bound of delta: what decides
    ni_confidence: float
    rms_difference: float = Field(ge=0)
    p_value: float | None
    discordant: Discordant | None
    significant: bool
    test: str
    phrase: str


class EvalHoldoutRun(Record):
    """The same model at the served batch on the eval holdout (`task.eval_holdout`: training
    examples nothing was trained on), where the run's decisions are taken."""

    examples: int = Field(ge=2)
    metrics: dict[str, float]
    primary: float | None
    predictions: str
    seconds: float | None = None
    delta: float | None = None  # points vs the reference's eval-holdout run; recomputed by Results
    guarded_deltas: dict[str, float] = {}  # the same for each guarded metric; recomputed
    # Paired statistics vs the reference's eval-holdout run, by metric (the primary's included).
    comparisons: dict[str, PairedStatistics] = {}


class Evaluation(Record):
    """A model (or artifact) evaluated on the task's evaluation split.

    `metrics` are the served accuracy: measured at `batch_size` 1, one request at a time as
    SingleStream serves it, because dynamic int8 quantises activations over the whole batch and
    a prediction then depends on its batch-mates. `batched` is the same run at a server's batch.
    """

    model: str
    variant: str
    runtime: Literal["torch", "onnxruntime"]
    artifact: str | None = None
    sha256: str | None = None  # the artifact's model.onnx (ONNX Runtime evaluations)
    size_bytes: int | None = None
    parameters: int | None = None
    metrics: dict[str, float]
    primary: float | None
    predictions: str
    cls: str | None = None
    seconds: float | None = None
    examples: int
    delta: float | None = None  # points vs the reference in PyTorch; recomputed by Results
    # The same for each of the task's guarded metrics (QA 2.0: HasAns_f1, NoAns_f1); recomputed.
    guarded_deltas: dict[str, float] = {}
    fidelity: Fidelity | None = None
    comparison: dict[str, Any] | None = None  # paired statistics vs the reference
    # The same for every per-example metric of the task, by name (QA: exact and f1).
    comparisons: dict[str, dict[str, Any]] | None = None
    batch_size: int | None = Field(None, ge=1)  # None: written before served accuracy
    batched: BatchedRun | None = None
    flip_rate: float | None = None  # batched.flips / examples; recomputed, never trusted
    eval_holdout: EvalHoldoutRun | None = None  # None: the run reserved none (or predates it)

    @model_validator(mode="after")
    def _recompute_flip_rate(self) -> Evaluation:
        if self.batched is not None and self.batched.flips > self.examples:
            raise ValueError(f"batched.flips {self.batched.flips} exceeds examples {self.examples}")
        self.flip_rate = (
            round(self.batched.flips / self.examples, 6)
            if self.batched is not None and self.examples
            else None
        )
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.variant)


# -- bench ----------------------------------------------------------------------------------------
Milliseconds = Annotated[float, Field(ge=0)]  # a negative time made a "-33x" speedup


class Latency(Record):
    mean: Milliseconds
    std: Milliseconds
    p50: Milliseconds
    p90: Milliseconds
    p95: Milliseconds
    p99: Milliseconds
    min: Milliseconds
    max: Milliseconds


class Memory(Record):
    peak_rss: float
    rss_growth: float
    peak_device: float | None = None


class Measurement(Record):
    """One (artifact, provider, batch, sequence) cell of a bench run, all rounds pooled."""

    artifact: str
    model: str
    variant: str
    runtime: Literal["torch", "onnxruntime"]
    provider: str
    batch: int = Field(ge=1)
    sequence: int = Field(ge=1)
    inputs: Literal["fixed", "real"]
    mean_sequence: float
    latency_ms: Latency
    round_p50_ms: list[float]
    round_p50_median_ms: float
    round_spread: float
    iterations: int
    throughput_per_s: float
    memory_mb: Memory
    session_create_ms: float
    size_bytes: int | None = None
    parameters: int | None = None
    flops_per_example: float | None = None
    verified: bool
    sha256: str | None = None  # the timed model.onnx (verified artifacts); the report checks it
    note: str | None = None
    providers_in_use: list[str] | None = None
    remeasured: int = 0  # extra rounds it got for spreading more than the noise threshold
    noisy: bool
    # Filled in when read into Results: which bench run (host) this came from.
    host: str | None = None
    host_label: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.batch, self.sequence)

    @property
    def key(self) -> tuple:
        """(host, model, variant, provider, batch, sequence): what makes two comparable."""
        return (self.host, self.model, self.variant, self.provider, self.batch, self.sequence)


class Host(Open):
    fingerprint: str
    hostname: str | None = None


class BenchRound(Record):
    round: int
    load_before: list[float] | None = None
    load_after: list[float] | None = None
    seconds: float


class BenchRun(Record):
    """One bench.json: the measurements of one host."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)
    schema_: str = Field(BENCH_SCHEMA, alias="schema")
    created: str
    host: Host
    settings: dict[str, Any]
    load_average: dict[str, list[float] | None] = {}
    rounds: list[BenchRound] = []
    flags: list[str] = []
    # The host's own noise in these rounds (measure/noise.py: floor, threshold, host_busy).
    noise: dict[str, Any] | None = None
    measurements: list[Measurement]
    scenarios: list[dict[str, Any]] = []  # serving scenarios (LoadGen), when measured
    scenario_settings: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _tag_measurements(self) -> BenchRun:
        label = host_label(self.host)
        for m in self.measurements:
            m.host, m.host_label = self.host.fingerprint, label
        return self

    def dump(self) -> dict[str, Any]:
        doc = self.model_dump(mode="json", by_alias=True)
        for m in doc["measurements"]:
            m.pop("host", None)
            m.pop("host_label", None)
        return doc


def host_label(host: Host | dict[str, Any]) -> str:
    """A short readable host name: hostname plus the fingerprint's first 8 characters."""
    data = host.model_dump() if isinstance(host, BaseModel) else host
    fp = str(data.get("fingerprint") or "unknown")
    return f"{data.get('hostname') or 'host'} ({fp[:8]})"


class TrialRound(Record):
    baseline_ms: Milliseconds  # p50 of the uncompressed PyTorch model
    candidate_ms: Milliseconds
    bare_ms: Milliseconds | None = None  # the bench's bare loop, timed with the pair


class SpeedTrial(Record):
    """The speed gate's pair timed back to back, round after round (measure/speed_trial.py):
    the gate decides on the ratios of the rounds the host was not loaded in, so a noisy host
    still gets a verdict and a loaded one none."""

    host: str  # fingerprint of the host that timed it
    provider: str
    batch: int = Field(ge=1)
    sequence: int = Field(ge=1)
    model: str  # the candidate: the recommended artifact when the trial ran
    variant: str
    baseline: str  # the uncompressed model, in PyTorch
    baseline_variant: str = "torch"
    limit: float = Field(gt=0)  # the min_speedup the rounds were planned against
    rounds: list[TrialRound]
    # The bench's own bare-loop p50 earlier in the run: a round whose bare loop ran `load_limit`
    # times slower was loaded (None: no bare loop timed, no round counts as loaded).
    quiet_bare_ms: Milliseconds | None = None
    load_limit: float = Field(1.5, gt=1)  # gates.load_limit when the trial ran
    looks: list[int]  # the round counts the verdict was (or would be) decided after
    test: str


# -- the run --------------------------------------------------------------------------------------
class StageTime(Record):
    records: int  # stage records the run used, computed now or earlier
    seconds: float  # the work they took, summed over every session that computed them
    untimed: int = 0  # records written before records kept their time


class RunInfo(Record):
    name: str
    config: dict[str, Any]
    config_hash: str
    config_path: str | None = None
    started: str
    finished: str
    duration_s: float  # this invocation only; a resumed run's compute is in `compute`
    compute: dict[str, StageTime] = {}  # stage name -> its records' compute time


class ConstantBaseline(Record):
    """What a predictor that ignores its input scores (asc_deploy/tasks/constant.py)."""

    prediction: str  # a class name, or "no answer"
    metrics: dict[str, float]


class EvalHoldout(Record):
    """The eval holdout's examples and their overlap with every other reader of the training
    split, by id, text or fragment (tasks/holdout.py): checked 0 before the run's first stage."""

    examples: int = Field(ge=0)  # scored (a run starts only with 2 or more)
    reserved: int = Field(ge=0)  # training examples withheld from training (scored or not)
    overlap_training: int = Field(ge=0)  # with the training split every trainer reads
    overlap_screening: int = Field(ge=0)  # with the task.holdout reserve (screening, int8-mixed)
    shared_with_eval: int = Field(ge=0)  # a text also in the evaluation split: counted, no leak

    @property
    def withheld(self) -> int:
        """Examples kept from training but not scored: fragments of scored texts (SST-2's
        phrases), or QA questions whose context is also read elsewhere."""
        return self.reserved - self.examples


class TaskInfo(Record):
    name: str
    family: Literal["classification", "question-answering"]
    primary_metric: str
    eval_examples: int
    data_note: str | None = None
    guarded_metrics: list[str] = []  # bounded by the accuracy budget too (Task.guarded_metrics)
    constant_baseline: ConstantBaseline | None = None  # the floor a fine-tuned model must clear
    eval_holdout: EvalHoldout | None = None  # task.eval_holdout: where the decisions are taken


class Similarity(Record):
    matrix: list[list[float]]
    num_layers: int
    examples: int
    tokens: int
    selections: dict[str, list[int]]  # threshold (as written) -> 1-based layers removed
    depth_targets: list[DepthTarget] = []  # ASC at `asc.remove_layers`, reached or not


class Gate(Record):
    name: str
    passed: bool
    # Neither passed nor failed: the measurement it rests on was noisy even after re-measuring.
    inconclusive: bool = False
    value: float | str | None
    limit: float | None
    reason: str


class Pick(Record):
    """The recommended artifact on one target provider and host."""

    model: str | None
    variant: str | None
    reason: str | None = None
    primary: float | None = None
    delta: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    speedup: float | None = None
    size_bytes: int | None = None
    artifact: str | None = None
    host: str | None = None
    host_label: str | None = None
    batch: int | None = None
    sequence: int | None = None
    by_host: dict[str, Pick | None] | None = None


class Results(Record):
    """Everything behind a report (results.json)."""

    schema_: str = Field(RESULTS_SCHEMA, alias="schema")
    run: RunInfo
    task: TaskInfo
    similarity: Similarity | None = None
    models: list[ModelEntry]
    evaluations: list[Evaluation]
    bench: list[BenchRun] = []
    # The speed gate's paired rounds, one per host that ran them (none: the gate reads the bench).
    speed_trials: list[SpeedTrial] = []
    gates: list[Gate] = []
    recommendation: dict[str, Pick] = {}

    @model_validator(mode="after")
    def _recompute_deltas(self) -> Results:
        """Deltas derive from the reference's PyTorch metrics, on the evaluation split and on
        the eval holdout alike: never trust a stored one."""
        ref = self.reference_evaluation()
        ref_holdout = ref.eval_holdout if ref is not None else None
        for ev in self.evaluations:
            _set_deltas(ev, ref, self.task.guarded_metrics)
            if ev.eval_holdout is not None:
                _set_deltas(ev.eval_holdout, ref_holdout, self.task.guarded_metrics)
        return self

    def dump(self) -> dict[str, Any]:
        doc = self.model_dump(mode="json", by_alias=True)
        doc["bench"] = [run.dump() for run in self.bench]
        return doc

    # -- look-ups --------------------------------------------------------------------------------
    def model(self, name: str) -> ModelEntry | None:
        return next((m for m in self.models if m.name == name), None)

    def reference(self) -> ModelEntry:
        for m in self.models:
            if m.kind == "reference":
                return m
        raise UserError("results.json has no model of kind 'reference' (the uncompressed model)")

    def reference_evaluation(self) -> Evaluation | None:
        """The uncompressed model evaluated in PyTorch fp32 (variant 'torch'), else its first."""
        refs = [m.name for m in self.models if m.kind == "reference"]
        evals = [e for e in self.evaluations if e.model in refs]
        return next((e for e in evals if e.variant == "torch"), evals[0] if evals else None)

    def evaluation(self, model: str, variant: str) -> Evaluation | None:
        return next((e for e in self.evaluations if e.key == (model, variant)), None)

    def torch_evaluation(self, model: str) -> Evaluation | None:
        """A model's evaluation in PyTorch (variant 'torch'), else its first; a twin's (same_as)
        is the one of the model it shares."""
        entry = next((m for m in self.models if m.name == model), None)
        model = entry.same_as if entry and entry.same_as else model
        evals = [e for e in self.evaluations if e.model == model]
        return next((e for e in evals if e.variant == "torch"), evals[0] if evals else None)

    def speed_trial(self, pick: Pick, provider: str) -> SpeedTrial | None:
        """The paired rounds that timed `pick` on its host, provider and shape, if any ran."""
        want = (pick.host, provider, pick.batch, pick.sequence, pick.model, pick.variant)
        return next(
            (
                t
                for t in self.speed_trials
                if (t.host, t.provider, t.batch, t.sequence, t.model, t.variant) == want
            ),
            None,
        )

    def primary_of(self, model: str) -> float | None:
        """A model's metric in PyTorch (variant 'torch'), else its first evaluation's."""
        ev = self.torch_evaluation(model)
        return ev.primary if ev else None


def _set_deltas(
    scored: Evaluation | EvalHoldoutRun,
    ref: Evaluation | EvalHoldoutRun | None,
    guarded: list[str],
) -> None:
    """`scored`'s delta and guarded deltas against `ref` on the same examples (None, {} without
    a reference to compare with)."""
    base = ref.primary if ref is not None else None
    scored.delta = (
        round(scored.primary - base, 4) if scored.primary is not None and base is not None else None
    )
    scored.guarded_deltas = {
        name: round(scored.metrics[name] - ref.metrics[name], 4)
        for name in guarded
        if ref is not None and name in scored.metrics and name in ref.metrics
    }


# -- reading files --------------------------------------------------------------------------------
def _read_json(path: str | Path, expected: str, *alternatives: str) -> dict[str, Any]:
    """The JSON document at `path`, schema-checked against `expected` or an alternative kind."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}; pass the path of an existing {expected} file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc
    got = str(doc.get("schema", "")) if isinstance(doc, dict) else ""
    kind = next((a for a in alternatives if got.startswith(a.split("/")[0] + "/")), expected)
    check_schema(doc, kind, str(path))
    return doc


def check_schema(doc: Any, expected: str, source: str) -> None:
    """Refuse a document that is not `expected`'s kind or has an unknown major version."""
    kind, major = expected.split("/")
    got = doc.get("schema") if isinstance(doc, dict) else None
    if not isinstance(got, str) or "/" not in got:
        raise UserError(f"{source}: no 'schema' key; expected a {expected} document")
    got_kind, got_version = got.split("/", 1)
    if got_kind != kind:
        raise UserError(f"{source}: schema {got!r} is not a {kind} document")
    if got_version.split(".")[0] != major:
        raise UserError(
            f"{source}: schema version {got_version} is unknown (this asc-deploy reads "
            f"{expected}); upgrade asc-deploy or regenerate the file"
        )


def validate(record_type: type[Record], doc: Any, source: str):
    """`doc` as `record_type`, or a one-line UserError naming the first bad field.

    Strict: a file's number must be a JSON number, never a string that looks like one."""
    try:
        return record_type.model_validate(doc, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise UserError(f"{source}: field '{where}': {first['msg']}{more}") from exc


def load_results(path: str | Path) -> Results:
    return validate(Results, _read_json(path, RESULTS_SCHEMA), str(path))


def load_bench(path: str | Path) -> BenchRun:
    return validate(BenchRun, _read_json(path, BENCH_SCHEMA), str(path))


class BenchSet(Record):
    """`asc-deploy bench-merge`'s output: whole bench runs from any hosts."""

    schema_: str = Field(BENCH_SET_SCHEMA, alias="schema")
    created: str
    hosts: dict[str, str | None]  # fingerprint -> hostname
    runs: list[BenchRun]


def load_bench_runs(path: str | Path) -> list[BenchRun]:
    """The bench runs of a bench.json or of a `bench-merge` set."""
    path = Path(path)
    doc = _read_json(path, BENCH_SCHEMA, BENCH_SET_SCHEMA)
    if doc["schema"].startswith(BENCH_SET_SCHEMA.split("/")[0] + "/"):
        return validate(BenchSet, doc, str(path)).runs
    return [validate(BenchRun, doc, str(path))]


# -- stage records (what each stage of `run` returns; stored under <run>/stages/) -----------------
class ModelFolder(Record):
    """A from_pretrained folder a stage produced or was given, with its content hash."""

    path: str
    hash: str | None = None  # None: a hub id, not a folder


class Profile(Record):
    """The ASC similarity matrix of the uncompressed model on the training split."""

    num_layers: int = Field(ge=1)
    matrix: list[list[float]]
    matrix_hash: str
    model_hash: str | None = None
    examples: int
    tokens: int
    document: dict[str, Any]  # similarity.json as `asc-deploy profile` writes it


class DepthTarget(Record):
    """ASC at a target depth: the highest threshold removing exactly `count` layers."""

    count: int
    threshold: float | None
    layers: list[int] | None
    reason: str | None = None


class Candidates(Record):
    """The comparison set: every compressed model to build, and what chose its layers."""

    selections: dict[str, list[int]]  # ASC threshold -> layers
    depth_targets: list[DepthTarget] = []
    models: list[ModelEntry]
    evidence: dict[str, dict[str, Any]] = {}  # criterion choice name -> the scores behind it


class ScreenScore(Record):
    score: float
    steps: int
    samples: int


class Pruned(Record):
    path: str
    hash: str  # the pruned folder's content: what recovery starts from
    removed_layers: list[int]
    parameters_before: int
    parameters_after: int


class ArtifactSet(Record):
    """The ONNX artifacts of one model: variant -> artifact folder."""

    model: str
    artifacts: dict[str, str]
    skipped: dict[str, str] = {}  # variant -> why it was not built
