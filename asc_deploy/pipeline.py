"""`asc-deploy run`: chain the stages for one config, resuming from what is already on disk.

    fine-tune -> profile -> prune + recover -> evaluate (PyTorch) -> export + variants
    -> evaluate (ONNX Runtime) -> bench -> report + gates

The orchestrator only chains stages. Every stage's result is recorded under
`<output_dir>/<name>/stages/` with the hash of its inputs; a rerun skips a stage whose record
matches (resume for free) and `force` redoes the named stages. Each stage writes atomically, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asc_deploy.config import RunConfig
from asc_deploy.fsutil import hash_folder, hash_json, read_json, write_json_atomic
from asc_deploy.progress import status_line

STAGES = ("finetune", "profile", "prune", "recover", "evaluate", "export", "bench", "report")
RESULTS_SCHEMA = "asc-deploy.results/1"


@dataclass
class ModelEntry:
    """One model of the comparison: its place in the study and its folder."""

    name: str
    kind: str  # reference | asc | strategy | off-the-shelf
    path: str
    layers: int
    removed_layers: list[int] = field(default_factory=list)
    group: str | None = None
    strategy: str | None = None
    threshold: float | None = None
    thresholds: list[float] = field(default_factory=list)
    seed: int | None = None
    parameters: int | None = None
    distilled: bool = False
    note: str | None = None


class Pipeline:
    def __init__(
        self, cfg: RunConfig, force: set[str] | None = None, config_path: Path | None = None
    ):
        from asc_deploy.tasks.presets import build_task

        self.cfg = cfg
        self.force = force or set()
        self.root = Path(cfg.output_dir) / cfg.name
        self.task = build_task(cfg.task)
        self.config_path = config_path
        self.head = (
            "question-answering" if self.task.family == "question-answering" else "classification"
        )
        self._tokenizer = None

    # -- stage bookkeeping ---------------------------------------------------------------------
    def stage(self, stage: str, key_name: str, inputs: dict, build: Callable[[], Any]) -> Any:
        """build()'s JSON result, reused when a record with the same inputs exists."""
        record_path = self.root / "stages" / f"{key_name}.json"
        key = hash_json(inputs)
        if stage not in self.force and record_path.is_file():
            record = read_json(record_path)
            if record.get("key") == key:
                return record["result"]
        result = build()
        write_json_atomic(
            record_path, {"key": key, "stage": stage, "inputs": inputs, "result": result}
        )
        return result

    # -- stages ----------------------------------------------------------------------------------
    def base_model(self) -> Path:
        """The uncompressed fine-tuned model: given, or fine-tuned here."""
        if self.cfg.model_finetuned:
            return Path(self.cfg.model) if Path(self.cfg.model).exists() else self.cfg.model
        from asc_deploy.compress.finetune import finetune

        status_line(f"[stage] fine-tune {self.cfg.model} on {self.task.name}")
        return finetune(
            self.cfg.model,
            self.task,
            self.cfg.finetune,
            self.root / "models" / "uncompressed",
            force="finetune" in self.force,
            trust_remote_code=self.cfg.trust_remote_code,
        )

    def similarity(self, base: Path) -> dict:
        from asc_deploy.compress.asc import selections_for_thresholds
        from asc_deploy.compress.profiling import profile_task, similarity_record, write_similarity

        inputs = {
            "model": _identity(base),
            "data": self.task.data_identity("train"),
            "samples": self.cfg.asc.profile_samples,
        }

        def build() -> dict:
            status_line("[stage] ASC profile: layer similarity on the training split")
            profile, identity = profile_task(
                base,
                self.task,
                self.cfg.asc.profile_samples,
                self.cfg.asc.batch_size,
                self.cfg.trust_remote_code,
            )
            record = similarity_record(profile, identity)
            selections = selections_for_thresholds(
                profile.matrix, self.cfg.asc.thresholds, self.cfg.asc.epsilon
            )
            write_similarity(self.root / "similarity", record, selections)
            return {**record, "selections": {str(t): v for t, v in selections.items()}}

        return self.stage("profile", "profile", inputs, build)

    def compressed_models(self, base: Path, similarity: dict) -> list[ModelEntry]:
        """ASC models per threshold, then the layer-choice baselines with as many layers removed."""
        total = similarity["num_layers"]
        entries: list[ModelEntry] = []
        by_layers: dict[tuple[int, ...], ModelEntry] = {}
        for threshold in self.cfg.asc.thresholds:
            removed = similarity["selections"][str(threshold)]
            entry = self._asc_entry(threshold, removed, total, by_layers)
            if entry is not None:
                entries.append(entry)
        counts = sorted(
            {len(e.removed_layers) for e in entries} | set(self.cfg.comparisons.layer_counts)
        )
        entries += self._strategy_entries(total, counts)
        built: dict[tuple[int, ...], ModelEntry] = {}
        for entry in entries:
            twin = built.get(tuple(entry.removed_layers))
            if twin is not None:  # e.g. `top` choosing exactly ASC's layers: train once
                entry.path, entry.note = twin.path, f"same layers as {twin.name}"
                entry.parameters = twin.parameters
                continue
            self._prune_and_recover(base, entry, similarity.get("matrix_hash"))
            built[tuple(entry.removed_layers)] = entry
        return entries

    def _asc_entry(self, threshold, removed, total, by_layers) -> ModelEntry | None:
        name = f"asc-{threshold:.2f}"
        if not removed:
            status_line(f"{name}: no layer reaches the threshold; nothing to remove")
            return None
        if len(removed) >= total:
            status_line(f"{name}: every layer is redundant at this threshold; skipped (keep one)")
            return None
        key = tuple(removed)
        if key in by_layers:  # a lower threshold chose the same layers: one model, two labels
            by_layers[key].thresholds.append(threshold)
            return None
        entry = ModelEntry(
            name=name,
            kind="asc",
            path=str(self.root / "models" / name),
            layers=total - len(removed),
            removed_layers=list(removed),
            group=name,
            strategy="asc",
            threshold=threshold,
            thresholds=[threshold],
            distilled=self._recovery().distillation,
        )
        by_layers[key] = entry
        return entry

    def _strategy_entries(self, total: int, counts: list[int]) -> list[ModelEntry]:
        from asc_deploy.compress.strategies import layers_for_strategy

        entries = []
        for count in counts:
            for strategy in self.cfg.comparisons.strategies:
                seeds = self.cfg.comparisons.random_seeds if strategy == "random" else [None]
                for seed in seeds:
                    removed = layers_for_strategy(
                        strategy, total, count, seed if seed is not None else 42
                    )
                    suffix = f"-s{seed}" if seed is not None else ""
                    name = f"{strategy}-{count}{suffix}"
                    entries.append(
                        ModelEntry(
                            name=name,
                            kind="strategy",
                            path=str(self.root / "models" / name),
                            layers=total - count,
                            removed_layers=removed,
                            group=f"{strategy}-{count}",
                            strategy=strategy,
                            seed=seed,
                            distilled=self._recovery().distillation,
                        )
                    )
        return entries

    def _recovery(self):
        return self.cfg.recovery or self.cfg.finetune

    def _prune_and_recover(self, base: Path, entry: ModelEntry, matrix_hash: str | None) -> None:
        from asc_deploy.compress.finetune import finetune
        from asc_deploy.compress.pruning import prune_model

        pruned = self.root / "models" / "pruned" / "-".join(map(str, entry.removed_layers))
        inputs = {"base": _identity(base), "removed": entry.removed_layers}

        def build_pruned() -> dict:
            status_line(f"[stage] prune {entry.name}: remove layers {entry.removed_layers}")
            return prune_model(
                base,
                entry.removed_layers,
                pruned,
                entry.strategy or "explicit",
                threshold=entry.threshold,
                seed=entry.seed,
                similarity_hash=matrix_hash,
                head=self.head,
            )

        record = self.stage("prune", f"prune-{pruned.name}", inputs, build_pruned)
        entry.parameters = record["parameters_after"]
        status_line(f"[stage] recover {entry.name} ({entry.layers} layers)")
        teacher = base if self._recovery().distillation else None
        finetune(
            pruned,
            self.task,
            self._recovery(),
            Path(entry.path),
            teacher=teacher,
            force="recover" in self.force,
            trust_remote_code=self.cfg.trust_remote_code,
        )

    def off_the_shelf(self) -> list[ModelEntry]:
        from asc_deploy.compress.finetune import finetune
        from asc_deploy.models.loading import load_config

        entries = []
        for spec in self.cfg.comparisons.off_the_shelf:
            path = Path(spec.model) if spec.finetuned else self.root / "models" / spec.name
            if not spec.finetuned:
                status_line(f"[stage] fine-tune off-the-shelf {spec.name} ({spec.model})")
                finetune(
                    spec.model,
                    self.task,
                    self.cfg.finetune,
                    path,
                    force="finetune" in self.force,
                    trust_remote_code=self.cfg.trust_remote_code,
                )
            config = load_config(path)
            layers = getattr(config, "n_layers", None) or config.num_hidden_layers
            entries.append(
                ModelEntry(
                    name=spec.name,
                    kind="off-the-shelf",
                    path=str(path),
                    layers=layers,
                    group="off-the-shelf",
                )
            )
        return entries

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate_torch(self, entry: ModelEntry, variant: str = "torch") -> dict:
        inputs = {
            "model": _identity(entry.path),
            "variant": variant,
            "data": self.task.data_identity("eval"),
        }

        def build() -> dict:
            from asc_deploy.models.loading import count_parameters, load_model_and_tokenizer
            from asc_deploy.tasks.evaluation import evaluate_torch

            status_line(f"[stage] evaluate {entry.name} ({variant}, PyTorch)")
            model, tokenizer = load_model_and_tokenizer(
                entry.path, self.head, label_names=self.task.label_names or None
            )
            if variant == "torch-dynamic-int8":
                from asc_deploy.measure.torch_runner import quantize_dynamic_int8

                model = quantize_dynamic_int8(model)
            result = evaluate_torch(model, tokenizer, self.task)
            record = self._save_eval(entry.name, variant, result)
            record.update(
                runtime="torch",
                artifact=None,
                size_bytes=_folder_weights_size(entry.path),
                parameters=count_parameters(model) if variant == "torch" else None,
            )
            return record

        return self.stage("evaluate", f"eval-{entry.name}-{variant}", inputs, build)

    def evaluate_artifact(self, entry: ModelEntry, variant: str, artifact: Path) -> dict:
        from asc_deploy.deploy.artifacts import read_manifest

        manifest = read_manifest(artifact)
        inputs = {"artifact": manifest.get("files"), "data": self.task.data_identity("eval")}

        def build() -> dict:
            from asc_deploy.deploy.ort_evaluate import evaluate_onnx

            status_line(f"[stage] evaluate {entry.name} ({variant}, ONNX Runtime)")
            result = evaluate_onnx(artifact, self.task)
            record = self._save_eval(entry.name, variant, result)
            record.update(
                runtime="onnxruntime",
                artifact=str(artifact),
                size_bytes=(artifact / "model.onnx").stat().st_size,
            )
            return record

        return self.stage("evaluate", f"eval-{entry.name}-{variant}", inputs, build)

    def _save_eval(self, model: str, variant: str, result) -> dict:
        import numpy as np

        from asc_deploy.tasks.evaluation import save_predictions

        folder = self.root / "evals" / f"{model}--{variant}"
        folder.mkdir(parents=True, exist_ok=True)
        predictions = folder / "predictions.jsonl"
        save_predictions(predictions, result.predictions)
        cls = None
        if result.cls_vectors is not None:
            cls = folder / "cls.npy"
            np.save(cls, result.cls_vectors)
        primary = result.metrics.get(self.task.primary_metric)
        return {
            "model": model,
            "variant": variant,
            "metrics": result.metrics,
            "primary": primary,
            "predictions": str(predictions),
            "cls": str(cls) if cls else None,
            "seconds": round(result.seconds, 3),
            "examples": result.num_examples,
        }

    # -- export ----------------------------------------------------------------------------------
    def export(self, entry: ModelEntry) -> dict[str, Path]:
        """fp32 artifact validated against PyTorch, then each configured variant."""
        from asc_deploy.deploy.export import export_artifact
        from asc_deploy.deploy.optimize import optimize_artifact
        from asc_deploy.deploy.quantize import quantize_artifact

        folder = self.root / "artifacts" / entry.name
        validation, samples, calibration = self._export_features(entry)
        status_line(f"[stage] export {entry.name}")
        family = self.task.family
        export_artifact(
            entry.path,
            folder / "fp32",
            family,
            validation,
            samples,
            self.cfg.export.opset,
            name=entry.name,
            task_name=self.task.name,
            reuse="export" not in self.force,
        )
        artifacts = {"fp32": folder / "fp32"}
        reuse = "export" not in self.force
        for variant in self._variants_for(entry):
            dest = folder / variant
            if variant == "fp32":
                continue
            if variant == "optimized":
                optimize_artifact(folder / "fp32", dest, "cpu", reuse=reuse)
            elif variant == "int8-dynamic":
                quantize_artifact(
                    folder / "fp32", dest, "dynamic", isa=self.cfg.export.isa, reuse=reuse
                )
            elif variant == "int8-static":
                quantize_artifact(
                    folder / "fp32",
                    dest,
                    "static",
                    isa=self.cfg.export.isa,
                    calibration_features=calibration,
                    calibration_samples=self.cfg.export.calibration_samples,
                    calibrator=self.cfg.export.calibration_method,
                    reuse=reuse,
                )
            elif variant == "fp16":
                if not any(p.lower() in ("cuda", "tensorrt") for p in self.cfg.bench.providers):
                    status_line(
                        f"{entry.name}: fp16 skipped (a CUDA variant; no cuda provider configured)"
                    )
                    continue
                quantize_artifact(folder / "fp32", dest, "fp16", provider="cuda", reuse=reuse)
            artifacts[variant] = dest
        return artifacts

    def _variants_for(self, entry: ModelEntry) -> list[str]:
        """The configured variants; the reference also gets ORT int8 when it is a baseline."""
        variants = list(self.cfg.export.variants)
        baselines = self.cfg.comparisons.quantized_baselines
        if entry.kind == "reference" and "ort-dynamic-int8" in baselines:
            variants += [] if "int8-dynamic" in variants else ["int8-dynamic"]
        return variants

    def _export_features(self, entry: ModelEntry):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(entry.path)
        eval_examples = self.task.load_examples("eval")
        # Validation on a spread of lengths: every k-th example, not just the first few.
        step = max(1, len(eval_examples) // max(1, self.cfg.export.validation_samples))
        validation = self.task.encode(
            tokenizer, eval_examples[::step][: self.cfg.export.validation_samples]
        )
        samples = self.task.encode(tokenizer, eval_examples[:256])
        calibration = None
        if "int8-static" in self.cfg.export.variants:
            train = self.task.load_examples("train", self.cfg.export.calibration_samples)
            calibration = self.task.encode(tokenizer, train)
        return validation, samples, calibration

    # -- bench -----------------------------------------------------------------------------------
    def bench(self, artifacts: dict[str, dict[str, Path]], reference: ModelEntry) -> dict:
        from asc_deploy.measure.harness import (
            BenchSettings,
            resolve_targets,
            run_bench,
            torch_targets,
        )
        from asc_deploy.measure.system import host_info

        settings = BenchSettings.from_config(self.cfg.bench)
        paths = [str(p) for variants in artifacts.values() for p in variants.values()]
        inputs = {
            "artifacts": {p: read_json(Path(p) / "manifest.json").get("files") for p in paths},
            "torch": _identity(reference.path) if self.cfg.bench.include_torch else None,
            "settings": asdict(settings),
            "host": host_info()["fingerprint"],
        }

        def build() -> dict:
            status_line(f"[stage] bench {len(paths)} artifacts")
            targets = resolve_targets(paths)
            if self.cfg.bench.include_torch:
                for target in torch_targets(reference.path):
                    target.model = reference.name  # the folder may be named anything
                    targets.append(target)
            doc = run_bench(targets, settings, progress=status_line)
            write_json_atomic(self.root / "bench.json", doc)
            return doc

        return self.stage("bench", "bench", inputs, build)

    # -- the whole run ---------------------------------------------------------------------------
    def run(self) -> dict:
        started = dt.datetime.now(dt.UTC)
        clock = time.perf_counter()
        base = Path(self.base_model())
        similarity = self.similarity(base)
        reference = self._reference_entry(base, similarity["num_layers"])
        models = [reference, *self.compressed_models(base, similarity), *self.off_the_shelf()]
        evaluations = self._evaluate_all(models)
        exported = self._export_all(models)
        for entry in models:
            for variant, folder in exported.get(entry.name, {}).items():
                evaluations.append(self.evaluate_artifact(entry, variant, folder))
        self._add_fidelity(evaluations)
        bench = self.bench(exported, reference)
        finished = dt.datetime.now(dt.UTC)
        return {
            "schema": RESULTS_SCHEMA,
            "run": {
                "name": self.cfg.name,
                "config": self.cfg.model_dump(mode="json"),
                "config_hash": hash_json(self.cfg.model_dump(mode="json")),
                "config_path": str(self.config_path) if self.config_path else None,
                "started": started.isoformat(),
                "finished": finished.isoformat(),
                "duration_s": round(time.perf_counter() - clock, 1),
            },
            "task": {
                "name": self.task.name,
                "family": self.task.family,
                "primary_metric": self.task.primary_metric,
                "eval_examples": len(self.task.load_examples("eval")),
                "data_note": self.task.data_note,
            },
            "similarity": {
                k: similarity[k]
                for k in ("matrix", "num_layers", "examples", "tokens", "selections")
            },
            "models": [self._model_record(e) for e in models],
            "evaluations": evaluations,
            "bench": [bench],
        }

    def _reference_entry(self, base: Path, layers: int) -> ModelEntry:
        from asc_deploy.models.loading import load_config

        config = load_config(base)
        return ModelEntry(
            name="uncompressed",
            kind="reference",
            path=str(base),
            layers=layers,
            note=f"{getattr(config, 'model_type', '')} fine-tuned on {self.task.name}",
        )

    def _evaluate_all(self, models: list[ModelEntry]) -> list[dict]:
        evaluations = []
        for entry in models:
            evaluations.append(self.evaluate_torch(entry))
            if (
                entry.kind == "reference"
                and "torch-dynamic-int8" in self.cfg.comparisons.quantized_baselines
            ):
                evaluations.append(self.evaluate_torch(entry, "torch-dynamic-int8"))
        return evaluations

    def _export_all(self, models: list[ModelEntry]) -> dict[str, dict[str, Path]]:
        wanted = set(self.cfg.export.models)
        exported = {}
        for entry in models:
            if entry.kind in wanted:
                exported[entry.name] = self.export(entry)
        return exported

    def _add_fidelity(self, evaluations: list[dict]) -> None:
        import numpy as np

        from asc_deploy.measure.fidelity import compare_predictions
        from asc_deploy.tasks.evaluation import load_predictions

        reference = next(
            e for e in evaluations if e["model"] == "uncompressed" and e["variant"] == "torch"
        )
        ref_records = load_predictions(reference["predictions"])
        ref_cls = np.load(reference["cls"]) if reference.get("cls") else None
        for evaluation in evaluations:
            records = load_predictions(evaluation["predictions"])
            cls = np.load(evaluation["cls"]) if evaluation.get("cls") else None
            evaluation["fidelity"] = compare_predictions(
                ref_records, records, ref_cls, cls, label_names=self.task.label_names or None
            )
            if evaluation["primary"] is not None and reference["primary"] is not None:
                evaluation["delta"] = round(evaluation["primary"] - reference["primary"], 4)

    def _model_record(self, entry: ModelEntry) -> dict:
        record = asdict(entry)
        if record["parameters"] is None:
            record["parameters"] = _parameters_from_folder(entry.path)
        return record


def _identity(path: str | Path) -> str:
    """A model's identity for cache keys: the content hash of a folder, or the hub id itself."""
    path = Path(path)
    return hash_folder(path) if path.is_dir() else str(path)


def _folder_weights_size(path: str | Path) -> int | None:
    files = list(Path(path).glob("*.safetensors")) + list(Path(path).glob("*.bin"))
    return sum(f.stat().st_size for f in files) or None


def _parameters_from_folder(path: str | Path) -> int | None:
    """Parameter count read from safetensors headers, without loading the model."""
    from math import prod

    from safetensors import safe_open

    total = 0
    for file in Path(path).glob("*.safetensors"):
        with safe_open(str(file), "np") as f:
            total += sum(prod(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118 (not a dict)
    return total or None


def run_pipeline(
    cfg: RunConfig, force: set[str] | None = None, config_path: Path | None = None
) -> tuple[dict, int]:
    """Run every stage, write the report; returns (results, exit code: 1 when a gate fails)."""
    from asc_deploy.report.gates import failure_lines
    from asc_deploy.report.render import write_report

    pipeline = Pipeline(cfg, force, config_path)
    results = pipeline.run()
    paths = write_report(results, pipeline.root / "report", cfg.gates)
    written = read_json(paths["results.json"])
    failures = failure_lines(written.get("gates", []))
    for line in failures:
        status_line(line)
    status_line(f"report: {paths['report.md']}  {paths['report.html']}")
    return written, 1 if failures else 0
