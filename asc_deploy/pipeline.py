"""`asc-deploy run`: the ordered stages for one config, and the comparison set they build.

    finetune -> profile -> select -> prune + recover -> evaluate (PyTorch) -> export
    -> evaluate (ONNX Runtime) -> compare (fidelity, statistics) -> bench
    -> speed trial (the speed gate's pair, back to back) -> report + gates

Each stage is a declared function in `asc_deploy/stages/` run through one `StageStore`, which
keys it on what it reads and consumes and reuses a matching record (resume for free); `force`
redoes the named stages. This module only orders them and says which models are compared.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict
from pathlib import Path

from asc_deploy.config import RunConfig
from asc_deploy.fsutil import hash_json
from asc_deploy.progress import status_line
from asc_deploy.records import (
    ArtifactSet,
    BenchRun,
    Evaluation,
    ModelEntry,
    ModelFolder,
    Pruned,
    Results,
    RunInfo,
    Screening,
    Similarity,
    SpeedTrial,
    TaskInfo,
    Width,
    WidthShape,
)
from asc_deploy.stages import compress, deploy, measure
from asc_deploy.stages.core import Context, Pending, StageStore, gather
from asc_deploy.tasks.constant import constant_baseline
from asc_deploy.tasks.holdout import eval_reserve_check

STAGES = (
    "finetune", "profile", "select", "prune", "narrow", "screen", "recover", "evaluate", "export",
    "bench", "speed-trial", "report",
)  # fmt: skip


class Pipeline:
    def __init__(
        self,
        cfg: RunConfig,
        force: set[str] | None = None,
        config_path: Path | None = None,
        executor=None,  # an asc_deploy.executors Executor; None: local
    ):
        from asc_deploy.tasks.presets import build_task

        self.cfg = cfg
        self.root = Path(cfg.output_dir) / cfg.name
        self.task = build_task(cfg.task)
        self.config_path = config_path
        self.store = StageStore(Context(self.root, frozenset(force or ())), executor)
        self._pruned: dict[tuple[int, ...], Pruned] = {}  # layer set -> pruned folder (_build)

    def run(self) -> Results:
        started, clock = dt.datetime.now(dt.UTC), time.perf_counter()
        base = self.store.run(compress.finetune_base, self.cfg, task=self.task)
        profile = self.store.run(compress.profile, self.cfg, model=base, task=self.task)
        candidates = self.store.run(
            compress.select_candidates, self.cfg, profile=profile, model=base, task=self.task
        )
        reference = self._reference(base, profile.num_layers)
        shelf = self._submit_off_the_shelf()  # (on a cluster) beside the layer sets' recoveries
        depth_models = self._build(candidates.models, base)
        widths = self._build_widths(reference, depth_models, base, profile.num_layers)
        models = [reference, *depth_models, *widths, *self._off_the_shelf(shelf)]
        measured = [m for m in models if m.same_as is None and _continued(m)]
        torch_jobs, export_jobs = self._evaluate_torch(measured), self._export(measured)
        evaluations = gather(torch_jobs)
        artifacts = self._artifact_sets(export_jobs)
        evaluations += self._evaluate_artifacts(artifacts)
        _compare(evaluations, self.task)
        bench = self._bench(artifacts, base, reference.name)
        facts = dict(profile=profile, candidates=candidates, models=models,
                     evaluations=evaluations, bench=bench)  # fmt: skip
        trials = self._speed_trials(self._results(started, clock, **facts), base, artifacts)
        return self._results(started, clock, **facts, speed_trials=trials)

    def _results(
        self, started, clock, profile, candidates, models, evaluations, bench, speed_trials=()
    ) -> Results:
        return Results(
            run=RunInfo(
                name=self.cfg.name,
                config=self.cfg.model_dump(mode="json"),
                config_hash=hash_json(self.cfg.model_dump(mode="json")),
                config_path=str(self.config_path) if self.config_path else None,
                started=started.isoformat(),
                finished=dt.datetime.now(dt.UTC).isoformat(),
                duration_s=round(time.perf_counter() - clock, 1),
                compute=self.store.compute_time(),
            ),
            task=TaskInfo(
                name=self.task.name,
                family=self.task.family,
                primary_metric=self.task.primary_metric,
                guarded_metrics=list(self.task.guarded_metrics),
                constant_baseline=constant_baseline(self.task),
                eval_examples=len(self.task.load_examples("eval")),
                data_note=self.task.data_note,
                eval_holdout=eval_reserve_check(self.task),  # preflight refused an overlap
            ),
            similarity=Similarity(
                matrix=profile.matrix,
                num_layers=profile.num_layers,
                examples=profile.examples,
                tokens=profile.tokens,
                selections=candidates.selections,
                depth_targets=candidates.depth_targets,
            ),
            models=models,
            evaluations=evaluations,
            bench=bench,
            speed_trials=list(speed_trials),
        )

    def _speed_trials(
        self, results: Results, base: ModelFolder, sets: list[ArtifactSet]
    ) -> list[SpeedTrial]:
        """The speed gate's pair (this host's pick against the uncompressed PyTorch model)
        timed back to back until its paired bounds settle the limit (measure/speed_trial.py).
        None without a speed gate, when the pick is that baseline itself, or for a bench run
        on cluster targets (each would need its own node's trial)."""
        from asc_deploy.manifest import SAMPLE_INPUTS
        from asc_deploy.report.recommend import recommend

        gates = self.cfg.gates
        on_targets = self.store.executor.kind == "ray" and self.cfg.executor.targets
        if gates.min_speedup is None or on_targets:
            return []
        pick = recommend(results, gates).get(gates.speedup_target)
        baseline = (results.reference().name, "torch")
        if not pick or not pick.model or (pick.model, pick.variant) == baseline or pick.by_host:
            return []
        samples = [Path(p) / SAMPLE_INPUTS for s in sets for p in s.artifacts.values()]
        trial = self.store.run(
            measure.speed_trial, self.cfg, candidate=Path(pick.artifact), model=pick.model,
            variant=pick.variant, reference=base, reference_name=baseline[0],
            provider=gates.speedup_target, shape=(pick.batch, pick.sequence),
            limit=gates.min_speedup, host=pick.host, quiet_bare_ms=_bare_p50(results.bench[0]),
            sample_inputs=next((p for p in samples if p.is_file()), None),
        )  # fmt: skip
        return [trial]

    # -- the comparison set ----------------------------------------------------------------------
    def _reference(self, base: ModelFolder, layers: int) -> ModelEntry:
        from asc_deploy.models.loading import load_config

        model_type = getattr(load_config(base.path), "model_type", "")
        return ModelEntry(
            name="uncompressed",
            kind="reference",
            path=base.path,
            layers=layers,
            parameters=_parameters_from_folder(base.path),
            note=f"{model_type} fine-tuned on {self.task.name}",
        )

    def _build(self, candidates: list[ModelEntry], base: ModelFolder) -> list[ModelEntry]:
        """Prune each distinct layer set once, screen them when configured, and recover the
        ones that continue; twins (another criterion choosing the same layers) share it all."""
        distinct: dict[tuple[int, ...], ModelEntry] = {}
        for candidate in candidates:
            distinct.setdefault(tuple(candidate.removed_layers), candidate)
        jobs = [self._prune(base, layers) for layers in distinct]
        pruned = dict(zip(distinct, gather(jobs), strict=True))
        self._pruned = pruned  # the width axis narrows these (depth-first)
        screening = self._screen(pruned, base, len) if self.cfg.screening else {}
        continuing = [ls for ls in distinct if ls not in screening or screening[ls].continued]
        recoveries = gather(
            self.store.submit(
                compress.recover, self.cfg, distinct[layers].name, pruned=pruned[layers],
                teacher=base, task=self.task, name=distinct[layers].name,
            )
            for layers in continuing
        )  # fmt: skip
        # layer set -> recovered folder
        recovered = {layers: r.path for layers, r in zip(continuing, recoveries, strict=True)}
        entries = []
        for candidate in candidates:
            layers = tuple(candidate.removed_layers)
            first = distinct[layers]
            continues = layers in recovered
            update = {
                "parameters": pruned[layers].parameters_after,
                "distilled": self.cfg.recovery.distillation,
                "screening": screening.get(layers),
                "path": recovered[layers] if continues else pruned[layers].path,
            }
            if candidate is not first:
                update |= {"same_as": first.name, "note": f"same layers as {first.name}"}
            entries.append(candidate.model_copy(update=update))
        return entries

    def _prune(self, base: ModelFolder, layers: tuple[int, ...]) -> Pending[Pruned]:
        label = "-".join(map(str, layers))
        return self.store.submit(
            compress.prune, self.cfg, label, model=base, removed=list(layers), head=self.task.family
        )

    def _screen(self, pruned: dict, base: ModelFolder, group_of) -> dict:
        """A short recovery of every distinct candidate, scored on training examples reserved
        from all training (task.holdout); the best `screening.keep` of each group (a depth, or a
        depth and width) continue."""
        jobs = [
            self.store.submit(
                compress.screen, self.cfg, Path(record.path).name,
                pruned=record, teacher=base, task=self.task,
            )
            for record in pruned.values()
        ]  # fmt: skip
        scores = dict(zip(pruned, gather(jobs), strict=True))
        keep = self.cfg.screening.keep
        by_group: dict = {}
        for key in scores:  # candidate order: ASC first, so it wins ties
            by_group.setdefault(group_of(key), []).append(key)
        continuing = {
            key
            for group in by_group.values()
            for key in sorted(group, key=lambda g: -scores[g].score)[:keep]
        }
        for key in continuing:
            status_line(f"screening: {Path(pruned[key].path).name} continues "
                        f"({scores[key].score:.2f})")  # fmt: skip
        return {
            key: Screening(**score.model_dump(), continued=key in continuing)
            for key, score in scores.items()
        }

    # -- the width axis (APC) --------------------------------------------------------------------
    def _build_widths(
        self, reference: ModelEntry, depth_models: list[ModelEntry], base: ModelFolder, total: int
    ) -> list[ModelEntry]:
        """Each width target combined with the uncompressed model and with each depth's
        continuing layer sets (depth first, then width, then one final distillation; or
        width first), screened per (depth, width) and recovered like the depth candidates."""
        apc = self.cfg.apc
        if not apc.targets:
            return []
        sources = self._width_sources(reference, depth_models, apc.depths)
        narrowed: dict[tuple, Pending[Pruned]] = {}  # (layers, width label, source name) -> job
        for target in apc.targets:
            label = width_label(target)
            first = self._narrow(base, base, target, label) if apc.order == "width-first" else None
            for source in sources:
                layers = tuple(source.removed_layers)
                folder = f"{'-'.join(map(str, layers))}+{label}" if layers else label
                narrowed[(layers, label, source.name)] = (
                    self._narrow(self._pruned[layers] if layers else base, base, target, folder)
                    if first is None
                    else self._prune_narrowed(first, layers, folder)
                )
        records = dict(zip(narrowed, gather(narrowed.values()), strict=True))
        screening = self._screen_widths(records, base)
        continuing = [key for key in records if key not in screening or screening[key].continued]
        recoveries = gather(
            self.store.submit(
                compress.recover, self.cfg, _width_name(key), pruned=records[key], teacher=base,
                task=self.task, name=_width_name(key),
            )
            for key in continuing
        )  # fmt: skip
        recovered = {key: r.path for key, r in zip(continuing, recoveries, strict=True)}
        before = _shape_of(base.path)
        return [
            self._width_entry(key, records[key], total, before, screening.get(key),
                              recovered.get(key))
            for key in records
        ]  # fmt: skip

    def _screen_widths(self, records: dict, base: ModelFolder) -> dict:
        """Screen the (depth, width) groups that hold more candidates than `screening.keep`;
        a group with no competition continues without a screen (nothing to choose)."""
        if not self.cfg.screening:
            return {}
        groups: dict = {}
        for key in records:
            groups.setdefault((len(key[0]), key[1]), []).append(key)
        contested = {
            key: records[key]
            for keys in groups.values()
            if len(keys) > self.cfg.screening.keep
            for key in keys
        }
        return self._screen(contested, base, lambda key: (len(key[0]), key[1])) if contested else {}

    def _width_sources(self, reference, depth_models, depths) -> list[ModelEntry]:
        """The uncompressed model and the continuing, distinct depth candidates, at the depths
        asked for (`apc.depths`; None: every depth built)."""
        firsts = [m for m in depth_models if m.same_as is None and _continued(m)]
        wanted = set(depths) if depths is not None else {0} | {m.removed for m in firsts}
        sources = [reference] if 0 in wanted else []
        sources += [m for m in firsts if m.removed in wanted]
        for depth in sorted(wanted - {0} - {m.removed for m in firsts}):
            status_line(f"apc.depths: no layer set with {depth} removed was built; skipped")
        return sources

    def _narrow(self, source, base: ModelFolder, target, folder: str) -> Pending[Pruned]:
        return self.store.submit(
            compress.narrow, self.cfg, folder, source=source, shape=target,
            teacher=base, task=self.task, folder=folder,
        )  # fmt: skip

    def _prune_narrowed(self, first: Pending[Pruned], layers: tuple, folder: str):
        """Width first: the narrowed uncompressed model, then these layers removed from it."""
        if not layers:
            return first
        narrowed = first.result()
        return self.store.submit(
            compress.prune, self.cfg, folder, model=compress.model_folder(narrowed.path),
            removed=list(layers), head=self.task.family, folder=folder,
        )  # fmt: skip

    def _width_entry(self, key, record: Pruned, total, before, screening, recovered):
        layers, label, source = key
        apc = self.cfg.apc
        return ModelEntry(
            name=_width_name(key),
            kind="width",
            path=recovered or record.path,
            layers=total - len(layers),
            removed_layers=list(layers),
            group=label,
            strategy="apc",
            parameters=record.parameters_after,
            distilled=self.cfg.recovery.distillation,
            screening=screening,
            note=f"{source} narrowed to {label}" if layers else f"uncompressed narrowed to {label}",
            width=Width(
                shape=_shape_of(record.path), before=before, init=apc.init, biases=apc.biases,
                steps=apc.steps, order=apc.order, narrows=source,
            ),
        )  # fmt: skip

    def _submit_off_the_shelf(self) -> list[Pending[ModelFolder]]:
        return [
            self.store.submit(
                compress.finetune_off_the_shelf, self.cfg, spec.name, spec=spec, task=self.task
            )
            for spec in self.cfg.comparisons.off_the_shelf
        ]

    def _off_the_shelf(self, jobs: list[Pending[ModelFolder]]) -> list[ModelEntry]:
        from asc_deploy.models.loading import load_config

        entries = []
        specs = self.cfg.comparisons.off_the_shelf
        for spec, folder in zip(specs, gather(jobs), strict=True):
            config = load_config(folder.path)
            layers = getattr(config, "n_layers", None) or config.num_hidden_layers
            entries.append(
                ModelEntry(
                    name=spec.name,
                    kind="off-the-shelf",
                    path=folder.path,
                    layers=layers,
                    group="off-the-shelf",
                    strategy="off-the-shelf",
                    parameters=_parameters_from_folder(folder.path),
                    note=spec.model,
                )
            )
        return entries

    # -- measuring -------------------------------------------------------------------------------
    def _evaluate_torch(self, models: list[ModelEntry]) -> list[Pending[Evaluation]]:
        baselines = self.cfg.comparisons.quantized_baselines
        evaluations = []
        for entry in models:
            variants = ["torch"]
            if entry.kind == "reference" and "torch-dynamic-int8" in baselines:
                variants.append("torch-dynamic-int8")
            for variant in variants:
                evaluations.append(self._evaluate(Path(entry.path), entry.name, variant))
        return evaluations

    def _evaluate(self, source: Path, model: str, variant: str) -> Pending[Evaluation]:
        return self.store.submit(
            measure.evaluate, self.cfg, f"{model}-{variant}",
            source=source, task=self.task, model=model, variant=variant,
        )  # fmt: skip

    def _export(self, models: list[ModelEntry]) -> list[Pending[ArtifactSet]]:
        wanted = set(self.cfg.export.models)
        sets = []
        for entry in models:
            if entry.kind not in wanted:
                continue
            variants = list(self.cfg.export.variants)
            reference_int8 = "ort-dynamic-int8" in self.cfg.comparisons.quantized_baselines
            if entry.kind == "reference" and reference_int8 and "int8-dynamic" not in variants:
                variants.append("int8-dynamic")
            artifact_set = self.store.submit(
                deploy.export, self.cfg, entry.name,
                model=compress.model_folder(entry.path), task=self.task, name=entry.name,
                variants=variants,
            )  # fmt: skip
            sets.append(artifact_set)
        return sets

    def _artifact_sets(self, jobs: list[Pending[ArtifactSet]]) -> list[ArtifactSet]:
        sets = gather(jobs)
        for artifact_set in sets:
            for variant, why in artifact_set.skipped.items():
                status_line(f"{artifact_set.model}: {variant} skipped ({why})")
        return sets

    def _evaluate_artifacts(self, sets: list[ArtifactSet]) -> list[Evaluation]:
        return gather(
            self._evaluate(Path(path), s.model, variant)
            for s in sets
            for variant, path in s.artifacts.items()
        )

    def _bench(self, sets: list[ArtifactSet], base: ModelFolder, reference: str) -> list[BenchRun]:
        """The bench on this host; on a Ray cluster with `executor.targets`, once per target on
        a node holding it (targets sharing a node one after another), merged into bench.json."""
        from asc_deploy.measure.system import host_info

        paths = [Path(p) for s in sets for p in s.artifacts.values()]
        targets = self.cfg.executor.targets if self.store.executor.kind == "ray" else []
        if not targets:
            return [
                self.store.run(
                    measure.bench, self.cfg, artifacts=paths, reference=base,
                    reference_name=reference, host=host_info()["fingerprint"],
                )
            ]  # fmt: skip
        from asc_deploy.fsutil import write_json_atomic
        from asc_deploy.measure.harness import merge_bench

        runs: list[BenchRun] = []
        for wave in self.store.executor.bench_waves(targets):
            runs += gather(
                self.store.submit(
                    measure.bench, self.cfg, _slug(target), target=target, artifacts=paths,
                    reference=base, reference_name=reference, host=target,
                )
                for target in wave
            )  # fmt: skip
        docs = [run.dump() for run in runs]
        write_json_atomic(
            self.root / "bench.json", docs[0] if len(docs) == 1 else merge_bench(docs)
        )
        return runs


def _bare_p50(run: BenchRun) -> float | None:
    """The median p50 of the bench's bare loop: what an unloaded round of this host times."""
    import statistics

    bare = (run.noise or {}).get("bare_p50_ms")
    return round(statistics.median(bare), 4) if bare else None


def width_label(target) -> str:
    """`apc-h288-f1152`: the widths a target narrows (unset ones keep the model's)."""
    parts = [f"{p}{v}" for p, v in (("h", target.hidden), ("f", target.ffn), ("a", target.heads))
             if v is not None]  # fmt: skip
    return "apc-" + "-".join(parts)


def _shape_of(folder: str) -> WidthShape:
    from asc_deploy.compress.apc import Shape
    from asc_deploy.models.loading import load_config

    return WidthShape(**asdict(Shape.of(load_config(folder))))


def _width_name(key: tuple) -> str:
    layers, label, source = key
    return f"{source}+{label}" if layers else label


def _continued(model: ModelEntry) -> bool:
    """Recovered and measured: not stopped by the screening."""
    return model.screening is None or model.screening.continued


def _slug(target: str) -> str:
    """A target resource name as a record label: `target:cpu-avx512` -> `target-cpu-avx512`."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", target).strip("-")


def _compare(evaluations: list[Evaluation], task) -> None:
    """Fidelity and paired statistics (bootstrap CI, McNemar) of every evaluation against the
    uncompressed model in PyTorch, on the same examples; on the eval holdout too, where the run
    reserved one."""
    import numpy as np

    from asc_deploy.measure.fidelity import compare_predictions
    from asc_deploy.records import Fidelity
    from asc_deploy.tasks.evaluation import load_predictions

    reference = next(e for e in evaluations if e.model == "uncompressed" and e.variant == "torch")
    ref_records = load_predictions(reference.predictions)
    ref_cls = np.load(reference.cls) if reference.cls else None
    for evaluation in evaluations:
        records = load_predictions(evaluation.predictions)
        cls = np.load(evaluation.cls) if evaluation.cls else None
        fidelity = compare_predictions(
            ref_records, records, ref_cls, cls, label_names=task.label_names or None
        )
        evaluation.fidelity = Fidelity.model_validate(fidelity)
        stats = _paired(ref_records, records, task.family)
        evaluation.comparison = stats.get(task.primary_metric) or next(iter(stats.values()))
        evaluation.comparisons = stats
    if reference.eval_holdout is not None:
        _compare_on_eval_holdout(evaluations, reference.eval_holdout, task.family)


def _compare_on_eval_holdout(evaluations: list[Evaluation], reference, family: str) -> None:
    """Every evaluation's eval-holdout run paired with the reference's: what decides."""
    from asc_deploy.records import PairedStatistics
    from asc_deploy.tasks.evaluation import load_predictions

    ref_records = load_predictions(reference.predictions)
    for evaluation in evaluations:
        run = evaluation.eval_holdout
        stats = _paired(ref_records, load_predictions(run.predictions), family)
        run.comparisons = {m: PairedStatistics.model_validate(c) for m, c in stats.items()}


def _paired(reference: list[dict], other: list[dict], family: str) -> dict[str, dict]:
    """Metric -> the paired comparison (measure/statistics.py) as results.json stores it."""
    from asc_deploy.measure.statistics import compare_predictions

    return {m: c.to_dict() for m, c in compare_predictions(reference, other, family).items()}


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
) -> tuple[Results, int]:
    """Run every stage, write the report; returns (analysed results, gates.exit_code)."""
    from asc_deploy.fsutil import exclusive_folder
    from asc_deploy.preflight import check_run
    from asc_deploy.report.gates import exit_code, failure_lines
    from asc_deploy.report.render import write_report

    check_run(cfg)
    from asc_deploy.executors import open_executor

    executor = open_executor(cfg.executor)
    try:
        pipeline = Pipeline(cfg, force, config_path, executor)
        with exclusive_folder(pipeline.root):  # a second run on the same folder is refused
            results = pipeline.run()
            analysed = write_report(results, pipeline.root / "report", cfg.gates)
    finally:
        executor.close()
    failures = failure_lines(analysed.gates)
    for line in failures:
        status_line(line)
    status_line(f"report: {pipeline.root / 'report' / 'report.md'}")
    return analysed, exit_code(analysed.gates)
