"""The report's tables, built once as plain rows and rendered as markdown or rich tables.

- main_table: one row per (model, variant): layers, parameters, size, the task metric and its
  delta (with the paired 95% CI when the evaluation carries one) on the evaluation split and,
  where the run reserved one, on the eval holdout the decisions are taken on; on int8 rows the
  bert-99 view
  (the metric as a % of the same model's fp32 artifact, and the paired int8 - fp32 difference
  with its 95% CI; report/bert99.py), faithfulness measures, and one cell per (host, provider,
  shape) with p50 / p95 and the speedup against the uncompressed PyTorch model on the same
  host, provider and shape;
- metrics_table: for a task with several per-example metrics (QA: EM and F1), each metric with
  its paired 95% CI against the uncompressed model;
- latency_table: one row per measurement with p50, p95, throughput, memory and speedup;
- layer_choice_table: per number of removed layers, the recovered metric of each criterion that
  chose that many layers (ASC, the baselines, random seeds as mean ± sd, off-the-shelf models of
  the same depth);
- gates_table, recommendation_table, hosts_table.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from asc_deploy.measure.statistics import QA_SUBSETS
from asc_deploy.records import Evaluation, Gate, Measurement, ModelEntry, Pick, Results, host_label
from asc_deploy.report import decision as D
from asc_deploy.report import results as R
from asc_deploy.report.bert99 import BERT99, Int8Share, int8_shares
from asc_deploy.report.gates import fmt_limit, gates_config
from asc_deploy.report.paired import MISSING, Paired

# Column order of the layer-choice table; criteria not listed follow in name order.
CRITERIA_ORDER = (
    "asc",
    "block-influence",
    "angular-block",
    "greedy",
    "top",
    "bottom",
    "alternate",
    "middle",
    "random",
    "explicit",
)
OFF_THE_SHELF = "off-the-shelf"


BELOW = "✗"  # after a value that misses its target (bert-99); the HTML also colours it
FALLBACK = "†"  # after an interval that is not the one the column names (see the note)


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""
    # (row, column) -> "fail" | "pass": cells to mark in colour where the output has colour.
    marks: dict[tuple[int, int], str] = field(default_factory=dict)


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    """A number with fixed decimals, or a dash when absent."""
    if value is None:
        return MISSING
    return f"{value:.{digits}f}{suffix}"


def delta_cell(ev: Evaluation | None, metric: str, with_verdict: bool = False) -> str:
    """Δ in points, with the paired 95% CI (and, asked for, the verdict) when measured."""
    if ev is None or ev.delta is None:
        return MISSING
    paired = Paired.of(ev, metric)
    if paired is None:
        return fmt(ev.delta)
    if with_verdict and paired.verdict():
        return f"{paired.interval()}, {paired.verdict()}"
    return paired.starred()


# -- the main table -------------------------------------------------------------------------------
def _targets(ms: list[Measurement]) -> list[tuple[str, str, int, int]]:
    """(host label, provider, batch, sequence) in measurement order, without repeats."""
    return list(dict.fromkeys((m.host_label, m.provider, m.batch, m.sequence) for m in ms))


def _fidelity_cells(ev: Evaluation | None) -> list[str]:
    fid = ev.fidelity if ev else None
    if fid is None:
        return [MISSING] * 5
    cal, knn = fid.calibration, fid.knn_agreement
    knn_cell = "/".join(fmt(knn.get(k)) for k in ("10", "20", "50")) if knn else MISSING
    return [
        fmt(fid.agreement, 3),
        fmt(fid.error_jaccard, 3),
        fmt(cal.ece if cal else None, 3),
        fmt(cal.brier if cal else None, 3),
        knn_cell,
    ]


def main_table(results: Results, flip_bound: float | None = None) -> Table:
    """Every evaluated (model, variant); `flip_bound` (default: the run's gates.batch_flip_bound)
    marks a batch-dependent row."""
    if flip_bound is None:
        flip_bound = gates_config(results).batch_flip_bound
    ms = R.measurements(results)
    targets = _targets(ms)
    one_host = len({t[0] for t in targets}) <= 1
    target_headers = [
        (f"{p} {b}x{s}" if one_host else f"{h} {p} {b}x{s}") + " p50/p95 ms"
        for h, p, b, s in targets
    ]
    paired = any(e.comparison for e in results.evaluations)
    held = any(e.eval_holdout for e in results.evaluations)
    shares = int8_shares(results)
    bert99_headers = ["int8 % of fp32", "int8 Δ vs fp32 [95% CI]"] if shares else []
    batched = _batched_size(results)
    metric = results.task.primary_metric
    headers = [
        "Model",
        "Kind",
        "Variant",
        "Layers",
        "Params (M)",
        "Size (MB)",
        f"{metric} b1" if batched else metric,
        "Δ (pts) [95% CI]" if paired else "Δ (pts)",
        *(["p (paired)"] if paired else []),
        *([f"{metric} eval holdout", "Δ eval holdout [95% CI]"] if held else []),
        *([f"{metric} b{batched}", "Flip %"] if batched else []),
        *bert99_headers,
        "Agree",
        "Err J",
        "ECE",
        "Brier",
        "kNN@10/20/50",
        *target_headers,
    ]
    index = R.measurement_index(results)
    by_artifact = {
        (m.host_label, m.provider, m.batch, m.sequence, m.model, m.variant): m for m in ms
    }
    table = Table("Main table", headers)
    for model, variant in R.artifact_keys(results):
        info, ev = results.model(model), results.evaluation(model, variant)
        size = ev.size_bytes if ev else None
        paired_row = Paired.of(ev, results.task.primary_metric)
        row = [
            model,
            info.kind if info else MISSING,
            variant,
            _layers_cell(info),
            _millions(info.parameters if info else None),
            _millions(size),
            fmt(ev.primary if ev else None),
            delta_cell(ev, results.task.primary_metric),
            *([_p_cell(paired_row.p_value if paired_row else None)] if paired else []),
            *(_eval_holdout_cells(ev, metric) if held else []),
        ]
        if batched:
            if ev and ev.flip_rate is not None and ev.flip_rate > flip_bound:
                table.marks[(len(table.rows), len(row) + 1)] = "fail"
            row += _batched_cells(ev, flip_bound)
        if shares:
            share = shares.get((model, variant))
            if share is not None and not share.passed:
                table.marks[(len(table.rows), len(row))] = "fail"
            row += _bert99_cells(share, ev)
        row += _fidelity_cells(ev)
        for target in targets:
            row.append(_latency_cell(results, by_artifact.get((*target, model, variant)), index))
        table.rows.append(row)
    table.note = (
        _served_note(batched, flip_bound)
        + "Δ in points vs the uncompressed model in PyTorch fp32"
        + (" with its paired 95% CI (* significant)" if paired else "")
        + (_eval_holdout_note(results) if held else "")
        + _bert99_note(results, shares)
        + "; Agree / Err J / kNN against it; latency cells: p50 / p95 (speedup vs the "
        "uncompressed PyTorch model on the same host, provider and shape)." + _floor_note(results)
    )
    return table


def _eval_holdout_cells(ev: Evaluation | None, metric: str) -> list[str]:
    """The eval holdout's metric and paired difference, where the decisions were taken."""
    run = ev.eval_holdout if ev else None
    if run is None:
        return [MISSING, MISSING]
    paired = Paired.of_eval_holdout(ev, metric)
    return [fmt(run.primary), paired.starred() if paired else fmt(run.delta)]


def _eval_holdout_note(results: Results) -> str:
    held = results.task.eval_holdout
    size = f"{held.examples:,} " if held else ""
    return (
        f"; on the evaluation split ({results.task.eval_examples:,} examples: the "
        f"published-comparable numbers) and on the eval holdout ({size}training examples "
        "nothing was trained on, task.eval_holdout), where the recommendation and the gates "
        "decide"
    )


def _batched_size(results: Results) -> int | None:
    """The batch the evaluations were also run at (None: results from before served accuracy)."""
    sizes = {ev.batched.batch_size for ev in results.evaluations if ev.batched is not None}
    return max(sizes) if sizes else None


def _batched_cells(ev: Evaluation | None, flip_bound: float) -> list[str]:
    """The batched metric and the flip rate, '0.80 batch-dependent' above the bound."""
    if ev is None or ev.batched is None or ev.flip_rate is None:
        return [MISSING, MISSING]
    flips = f"{100 * ev.flip_rate:.2f}"
    if ev.flip_rate > flip_bound:
        flips += " batch-dependent"
    return [fmt(ev.batched.primary), flips]


def _served_note(batched: int | None, flip_bound: float) -> str:
    if not batched:
        return ""
    return (
        f"Served accuracy: b1 is each example alone (how SingleStream serves it; the gates and "
        f"the recommendation use it), b{batched} the largest batch a server forms here, "
        f"requests in arrival order; Flip %: share of examples predicted differently between "
        f"the two, batch-dependent above {100 * flip_bound:g}%. "
    )


def _floor_note(results: Results) -> str:
    """Where the uncompressed model stands against the best constant prediction."""
    baseline, ref = results.task.constant_baseline, results.reference_evaluation()
    metric = results.task.primary_metric
    floor = baseline.metrics.get(metric) if baseline else None
    if floor is None or ref is None or ref.primary is None:
        return ""
    text = f" A constant prediction ({baseline.prediction}) scores {floor:.2f} {metric} here"
    if ref.primary <= floor:
        return (
            f"{text}, as much as the uncompressed model ({ref.primary:.2f}): it has not learned "
            "the task, so differences from it say little."
        )
    return f"{text}; the uncompressed model is {ref.primary - floor:.2f} points above it."


def _bert99_cells(share: Int8Share | None, ev: Evaluation | None) -> list[str]:
    """'98.41% ✗' and '-1.38 [-2.41, -0.46]*' on an int8 row; blank on others."""
    if share is None:
        int8_row = ev is not None and "int8" in ev.variant
        return [MISSING, MISSING] if int8_row else ["", ""]
    text = f"{share.percent:.2f}"
    if not share.passed and float(text) >= BERT99:
        text = f"{math.floor(share.percent * 100) / 100:.2f}"  # 98.996 is a miss: never "99.00"
    percent = f"{text}%" + ("" if share.passed else f" {BELOW}")
    if share.paired_with is None:
        return [percent, MISSING]
    interval = Paired(
        share.delta, share.ci_low, share.ci_high, share.p_value, share.significant
    ).interval()
    interval += "*" if share.significant else ""
    return [percent, interval + (FALLBACK if share.paired_with == "reference" else "")]


def _bert99_note(results: Results, shares: dict[tuple[str, str], Int8Share]) -> str:
    if not shares:
        return ""
    metric = results.task.primary_metric
    note = (
        f"; int8 % of fp32: the int8 artifact's {metric} as a share of the same model's fp32 "
        "artifact (PyTorch dynamic int8: of PyTorch fp32); MLPerf's bert-99 rule asks "
        f"≥ {BERT99:g}%, {BELOW} marks a miss; int8 Δ vs fp32: int8 - fp32 in points with the "
        "paired 95% bootstrap CI from both artifacts' per-example predictions (* significant)"
    )
    if any(s.paired_with == "reference" for s in shares.values()):
        note += (
            f"; {FALLBACK} those predictions were not readable here: the CI shown is int8 vs the "
            "uncompressed model in PyTorch (the Δ column's), not vs its own fp32"
        )
    return note


def _millions(value: int | None) -> str:
    """Millions to three significant figures: 22.7, 0.0459 (tiny test models stay readable)."""
    return f"{value / 1e6:.3g}" if value else MISSING


def _p_cell(p_value: float | None) -> str:
    if p_value is None:
        return MISSING
    return "<0.001" if p_value < 0.001 else f"{p_value:.3f}"


def _layers_cell(info: ModelEntry | None) -> str:
    """Layers kept, which (1-based) were removed, and a narrowed model's widths:
    "4 (-1,3)", "4 (-5,6) h288 f1152"."""
    if info is None:
        return MISSING
    removed = ",".join(map(str, info.removed_layers))
    cell = f"{info.layers} (-{removed})" if removed else str(info.layers)
    if info.width is not None:
        shape = info.width.shape
        cell += f" h{shape.hidden} f{shape.ffn} a{shape.heads}"
    return cell


def _latency_cell(results: Results, m: Measurement | None, index: R.MeasurementIndex) -> str:
    if m is None:
        return MISSING
    sp = R.speedup(results, m, index)
    cell = f"{fmt(m.latency_ms.p50)} / {fmt(m.latency_ms.p95)}"
    cell += f" ({sp:.2f}x)" if sp is not None else ""
    return cell + (" noisy" if m.noisy else "")


def latency_table(results: Results, label: str) -> Table:
    """Every measurement of one host: latency, throughput, memory, speedup."""
    headers = [
        "Model",
        "Variant",
        "Runtime",
        "Provider",
        "Shape",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "Throughput /s",
        "Peak RSS MB",
        "Speedup",
        "Noisy",
    ]
    index = R.measurement_index(results)
    table = Table(f"Latency on {label}", headers)
    for m in R.measurements(results):
        if m.host_label != label:
            continue
        lat = m.latency_ms
        table.rows.append(
            [
                m.model,
                m.variant,
                m.runtime,
                m.provider,
                f"{m.batch}x{m.sequence}",
                fmt(lat.p50),
                fmt(lat.p95),
                fmt(lat.p99),
                fmt(m.throughput_per_s, 1),
                fmt(m.memory_mb.peak_rss, 0),
                fmt(R.speedup(results, m, index), 2, "x"),
                "yes" if m.noisy else "",
            ]
        )
    return table


def gates_table(gates: list[Gate]) -> Table:
    table = Table("Release gates", ["Gate", "Result", "Value", "Limit", "Reason"])
    for g in gates:
        value = g.value if g.value is None or isinstance(g.value, str) else f"{g.value:g}"
        table.rows.append(
            [
                g.name,
                "PASS" if g.passed else "INCONCLUSIVE" if g.inconclusive else "FAIL",
                value or MISSING,
                fmt_limit(g.limit) if g.limit is not None else MISSING,
                g.reason,
            ]
        )
    if not gates:
        table.note = "No gates configured (gates: in the run config)."
    return table


def recommendation_table(results: Results, recommendation: dict[str, Pick]) -> Table:
    """Each target's pick; decided on the eval holdout, its metric and difference there come
    first and the evaluation split's difference beside them."""
    metric = results.task.primary_metric
    held = D.on_eval_holdout(results)
    scored = (
        [f"{metric} (eval holdout)", "Δ eval holdout (pts)", "Δ eval split (pts)"]
        if held
        else [metric, "Δ (pts)"]
    )
    headers = ["Target", "Host", "Model", "Variant", *scored, "Shape", "p50 ms", "p95 ms",
               "Speedup", "Size (MB)"]  # fmt: skip
    table = Table("Recommendation", headers, note="No bench measurements: nothing to recommend.")
    if recommendation:
        on = " on the eval holdout" if held else ""
        table.note = "Fastest artifact within the accuracy budget on each target and host, " + (
            f"by its point difference{on} (gates.decision: point)."
            if gates_config(results).decision == "point"
            else f"shown non-inferior{on}: the one-sided 95% lower bound of its paired "
            "difference is at least minus the budget."
        )
    for provider, rec in recommendation.items():
        for pick in (rec.by_host or {"": rec}).values():
            if pick is None or not pick.model:
                table.rows.append([provider, *[MISSING] * (len(headers) - 1)])
                table.note = (pick or rec).reason or ""
                continue
            ev = results.evaluation(pick.model, pick.variant)
            table.rows.append(
                [
                    provider,
                    pick.host_label or MISSING,
                    pick.model,
                    pick.variant,
                    *_picked_scores(ev, pick, metric, held),
                    f"{pick.batch}x{pick.sequence}",
                    fmt(pick.p50_ms),
                    fmt(pick.p95_ms),
                    fmt(pick.speedup, 2, "x"),
                    _millions(pick.size_bytes),
                ]
            )
    return table


def _picked_scores(ev: Evaluation | None, pick: Pick, metric: str, held: bool) -> list[str]:
    """The pick's metric and difference (with the verdict) where it was decided; on the eval
    holdout, then its evaluation-split difference too."""
    split = delta_cell(ev, metric, with_verdict=True) if ev else fmt(pick.delta)
    if not held:
        return [fmt(pick.primary), split]
    run = ev.eval_holdout if ev else None
    paired = Paired.of_eval_holdout(ev, metric)
    decided = f"{paired.interval()}, {paired.verdict()}" if paired else MISSING
    return [fmt(run.primary if run else None), decided, split]


# -- layer choice ---------------------------------------------------------------------------------
def _criterion(model: ModelEntry, reference: ModelEntry) -> tuple[int, str] | None:
    """(layers removed, column) of a model in the layer-choice table; None if it has no place."""
    if model.kind in ("asc", "strategy") and model.removed_layers:
        return model.removed, model.strategy or model.kind
    if model.kind == "off-the-shelf" and model.layers < reference.layers:
        return reference.layers - model.layers, OFF_THE_SHELF
    return None


def _column_order(name: str) -> tuple[int, str]:
    if name == OFF_THE_SHELF:
        return (len(CRITERIA_ORDER) + 1, name)
    rank = CRITERIA_ORDER.index(name) if name in CRITERIA_ORDER else len(CRITERIA_ORDER)
    return (rank, name)


def _model_cell(results: Results, model: ModelEntry) -> str | None:
    """'85.78 Δ -0.40 [-1.30, +0.50] · layers 1,3 · t=0.9' for one model, None if not evaluated."""
    ev = results.torch_evaluation(model.name)
    if model.screening is not None and not model.screening.continued:
        return f"screened out ({fmt(model.screening.score)} held-out)"
    if ev is None or ev.primary is None:
        return None
    parts = [fmt(ev.primary)]
    if ev.comparison:
        parts[0] += f" Δ {delta_cell(ev, results.task.primary_metric)}"
    if model.kind == "off-the-shelf":
        parts.append(model.name)
    else:
        parts.append("layers " + ",".join(map(str, model.removed_layers)))
    thresholds = model.thresholds or ([model.threshold] if model.threshold is not None else [])
    if thresholds:
        parts.append("t=" + ",".join(f"{t:g}" for t in thresholds))
    return " · ".join(parts)


def _seed_cell(results: Results, models: list[ModelEntry]) -> str | None:
    """Several seeds of one criterion: mean ± standard deviation of their metrics."""
    values = [
        ev.primary
        for m in models
        if (ev := results.torch_evaluation(m.name)) and ev.primary is not None
    ]
    if not values:
        return None
    if len(values) == 1:
        return _model_cell(results, models[0]) if len(models) == 1 else fmt(values[0])
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def _screened_out_cell(models: list[ModelEntry]) -> str | None:
    scores = [m.screening.score for m in models if m.screening and not m.screening.continued]
    if not scores:
        return None
    return f"screened out ({fmt(statistics.mean(scores))} held-out)"


def _cell(results: Results, models: list[ModelEntry]) -> str:
    if any(m.seed is not None for m in models):
        text = _seed_cell(results, models) or _screened_out_cell(models)
    else:
        cells = [c for m in models if (c := _model_cell(results, m)) is not None]
        text = " / ".join(dict.fromkeys(cells)) if cells else None  # twins show once
    return text or MISSING


def layer_choice_table(results: Results) -> Table:
    """Per number of removed layers: each criterion's recovered metric at that depth."""
    reference = results.reference()
    groups: dict[int, dict[str, list[ModelEntry]]] = {}
    for model in results.models:
        place = _criterion(model, reference)
        if place is not None:
            groups.setdefault(place[0], {}).setdefault(place[1], []).append(model)
    # Off-the-shelf models only where a pruned model of their depth exists to compare with.
    depths = {n for n, cols in groups.items() if set(cols) - {OFF_THE_SHELF}}
    groups = {n: cols for n, cols in groups.items() if n in depths}
    columns = sorted({c for cols in groups.values() for c in cols}, key=_column_order)
    table = Table(
        "Layer-choice baselines (same number of layers removed)",
        ["Removed", "Layers left", *columns],
    )
    for removed in sorted(groups):
        cols = groups[removed]
        table.rows.append(
            [
                str(removed),
                str(reference.layers - removed),
                *[_cell(results, cols[c]) if c in cols else MISSING for c in columns],
            ]
        )
    paired = any(e.comparison for e in results.evaluations)
    table.note = (
        f"The {results.task.primary_metric} of each model after recovery, in PyTorch"
        + ("; Δ vs the uncompressed model with its paired 95% CI (* significant)" if paired else "")
        + "; several seeds as mean ± standard deviation; t: the ASC threshold(s) that chose "
        "those layers; off-the-shelf: compressed models of the same depth."
    )
    if not table.rows:
        table.note = "No pruned model in this run."
    return table


def metrics_table(results: Results) -> Table | None:
    """Every per-example metric of a task that has several (QA: EM and F1) and its guarded subsets
    (SQuAD 2.0: HasAns_f1, NoAns_f1), each with its paired 95% CI against the uncompressed model;
    None for a one-metric task."""
    guarded = results.task.guarded_metrics
    compared = dict.fromkeys(m for e in results.evaluations for m in (e.comparisons or {}))
    # The subsets' other scores (HasAns_exact, ...) are in results.json; the table keeps to the
    # metrics the recommendation and the gate bound.
    metrics = [m for m in compared if m.split("_")[0] not in QA_SUBSETS] + guarded
    if len(metrics) < 2:
        return None
    headers = ["Model", "Variant"]
    for metric in metrics:
        headers += [metric, f"Δ {metric} [95% CI]"]
    table = Table("Every metric, paired with the uncompressed model", headers)
    for model, variant in R.artifact_keys(results):
        ev = results.evaluation(model, variant)
        row = [model, variant]
        for metric in metrics:
            paired = Paired.of(ev, metric) if ev and metric in (ev.comparisons or {}) else None
            row += [
                fmt(ev.metrics.get(metric) if ev else None),
                paired.starred() if paired else MISSING,
            ]
        table.rows.append(row)
    table.note = (
        "Each metric on the evaluation split; Δ in points vs the uncompressed model in PyTorch "
        "fp32 with the paired 95% bootstrap CI over the same examples (* significant)."
    )
    if guarded:
        table.note += (
            f" {', '.join(guarded)}: the task's guarded subsets, each over its own questions, "
            "which the recommendation and the accuracy gate bound by the same budget as the "
            "primary metric (a model that stops answering keeps its F1 near the unanswerable "
            "share)."
        )
    return table


def screening_table(results: Results) -> Table | None:
    """Every screened candidate: its short-recovery score on held-out training examples and
    whether it went on to full recovery; None when the run did not screen."""
    screened = [m for m in results.models if m.screening is not None]
    if not screened:
        return None
    table = Table(
        "Screening (short recovery, scored on held-out training examples)",
        ["Candidate", "Criterion", "Removed layers", "Score", "Steps", "Continued", "Note"],
    )
    for m in sorted(screened, key=lambda m: (m.removed, -m.screening.score)):
        table.rows.append(
            [
                m.name,
                m.strategy or m.kind,
                ",".join(map(str, m.removed_layers)),
                fmt(m.screening.score),
                str(m.screening.steps),
                "yes" if m.screening.continued else "",
                m.note or "",
            ]
        )
    first = screened[0].screening
    table.note = (
        f"{results.task.primary_metric} on {first.samples} training examples reserved from all "
        f"training (task.holdout), after {first.steps} recovery steps; the best of each depth "
        "recovered fully. The evaluation split is never read while screening."
    )
    return table


def hosts_table(results: Results) -> Table:
    headers = ["Host", "CPU", "ISA", "Cores", "Memory GB", "GPU", "onnxruntime", "Threads", "Flags"]
    table = Table("Hosts", headers)
    for run in results.bench:
        # Host facts vary by machine and library version: an open record, read as such.
        facts = run.host.model_dump()
        cpu, gpu, versions = (facts.get(k) or {} for k in ("cpu", "gpu", "versions"))
        table.rows.append(
            [
                host_label(run.host),
                str(cpu.get("model", MISSING)),
                str(cpu.get("isa", MISSING)),
                f"{cpu.get('physical_cores', '?')}/{cpu.get('logical_cores', '?')}",
                fmt(facts.get("memory_gb"), 1),
                gpu.get("name", MISSING),
                versions.get("onnxruntime") or MISSING,
                f"{run.settings.get('intra_op_threads', '?')}/"
                f"{run.settings.get('inter_op_threads', '?')}",
                _flags_cell(run.flags),
            ]
        )
    return table


def compute_table(results: Results) -> Table | None:
    """What the run's stages cost, summed over every session that computed them (a resumed run's
    own duration counts only its last invocation)."""
    compute = results.run.compute
    if not compute:
        return None
    order = sorted(compute.items(), key=lambda item: -item[1].seconds)
    rows = [
        [stage, str(t.records), MISSING if t.untimed == t.records else _clock(t.seconds),
         str(t.untimed or "")]
        for stage, t in order
    ]  # fmt: skip
    total = sum(t.seconds for t in compute.values())
    rows.append(["total", str(sum(t.records for t in compute.values())), _clock(total), ""])
    note = (
        f"Compute time of the stage records this run used, whenever they were computed; this "
        f"invocation took {_clock(results.run.duration_s)}. Untimed: records written before "
        "records kept their time."
    )
    return Table("Compute time by stage", ["Stage", "Records", "Time", "Untimed"], rows, note)


def _clock(seconds: float) -> str:
    """1:02:03 for long work, 12.3 s for short (a tiny run's stages are all under a second)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _flags_cell(flags: list[str]) -> str:
    """One flag in full; several by count: the report's Notes list each one already."""
    if len(flags) <= 1:
        return flags[0] if flags else MISSING
    return f"{len(flags)} flags, listed under Notes"


def _escape(cell: str) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    lines = [f"### {table.title}", ""]
    if not table.rows:
        lines.append(table.note or "(nothing to show)")
        return "\n".join(lines) + "\n"
    lines.append("| " + " | ".join(_escape(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    for r, row in enumerate(table.rows):
        cells = [
            f"**{_escape(c)}**" if table.marks.get((r, k)) == "fail" else _escape(c)
            for k, c in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", f"_{table.note}_"]
    return "\n".join(lines) + "\n"


def to_rich(table: Table):
    """A rich.table.Table for the terminal (rich imported here: tables stay importable alone)."""
    from rich.table import Table as RichTable
    from rich.text import Text

    styles = {"fail": "bold red", "pass": "bold green"}
    out = RichTable(title=table.title, caption=table.note or None)
    for h in table.headers:
        out.add_column(h, overflow="fold")
    for r, row in enumerate(table.rows):
        marks = {k: styles[m] for (i, k), m in table.marks.items() if i == r and m in styles}
        out.add_row(*(Text(c, style=marks[k]) if k in marks else c for k, c in enumerate(row)))
    return out
