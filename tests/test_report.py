"""Report building on a real run's results: bench merging, tables, layer choice, plots, HTML.

Every Results here comes from the tiny end-to-end run (tests/pipeline_helpers.py); a test that
needs other values derives them from that run's records.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from asc_deploy import records
from asc_deploy.errors import UserError
from asc_deploy.measure.statistics import compare_prediction_files
from asc_deploy.records import BenchRun, Results, load_results
from asc_deploy.report import plots, tables
from asc_deploy.report import results as R
from asc_deploy.report.gates import gates_config
from asc_deploy.report.paired import MISSING
from asc_deploy.report.pareto import pareto_front
from asc_deploy.report.recommend import recommend
from asc_deploy.report.render import analyse, write_report

EDGE = "e" * 16


@pytest.fixture
def results(run_results_file) -> Results:
    return load_results(run_results_file)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, run_results_file) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(load_results(run_results_file), out)
    return out


def on_host(run: BenchRun, fingerprint: str, hostname: str, **changes) -> BenchRun:
    """The same bench run as if measured on another host (validated, so measurements re-tag)."""
    doc = run.dump()
    doc["host"] = {**doc["host"], "fingerprint": fingerprint, "hostname": hostname}
    return BenchRun.model_validate({**doc, **changes})


def scaled(run: BenchRun, factor: float, **changes) -> BenchRun:
    """The run with every latency multiplied by `factor`."""
    doc = run.dump()
    for m in doc["measurements"]:
        m["latency_ms"] = {k: v * factor for k, v in m["latency_ms"].items()}
    return BenchRun.model_validate({**doc, **changes})


def with_evaluation(results: Results, model: str, variant: str, **changes) -> Results:
    """The results with one evaluation changed (deltas recomputed by validation)."""
    doc = results.dump()
    for ev in doc["evaluations"]:
        if (ev["model"], ev["variant"]) == (model, variant):
            ev.update(changes)
    return Results.model_validate(doc)


def interval(comparison: dict) -> str:
    """A paired comparison as the report writes it: '+12.50 [-16.67, +41.67]', * if significant."""
    c = comparison
    star = "*" if c["significant"] else ""
    return f"{c['delta']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]{star}"


def metric_cell(results: Results, model: str) -> str:
    """A model's PyTorch metric, with its paired interval when the run compared it."""
    ev = results.evaluation(model, "torch")
    return f"{ev.primary:.2f} Δ {interval(ev.comparison)}" if ev.comparison else f"{ev.primary:.2f}"


def test_pareto_front_on_hand_made_points():
    #        0: (1, 80)  1: (2, 85)  2: (2, 84) dominated by 1  3: (3, 83) dominated by 1
    #        4: (4, 90)  5: (4, 90) duplicate of 4  6: (0.5, 70)  7: (5, 89) dominated by 4
    points = [(1, 80), (2, 85), (2, 84), (3, 83), (4, 90), (4, 90), (0.5, 70), (5, 89)]
    assert pareto_front(points) == [6, 0, 1, 4, 5]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, float("nan")), (2.0, 1.0)]) == [1]


def test_schema_versions_are_checked():
    schema = records.RESULTS_SCHEMA
    records.check_schema({"schema": "asc-deploy.results/1.3"}, schema, "x")  # minor: fine
    with pytest.raises(UserError, match="version 2 is unknown"):
        records.check_schema({"schema": "asc-deploy.results/2"}, schema, "x")
    with pytest.raises(UserError, match="not a asc-deploy.results"):
        records.check_schema({"schema": "asc-deploy.bench/1"}, schema, "x")
    with pytest.raises(UserError, match="no 'schema'"):
        records.check_schema([], schema, "x")


def test_merge_bench_tags_hosts_and_drops_duplicates(results):
    (own,) = results.bench
    edge = on_host(own, EDGE, "edge-box")
    merged = R.merge_bench(results, [edge, on_host(own, EDGE, "edge-box")])
    assert len(merged.bench) == 2 and len(results.bench) == 1
    ms = R.measurements(merged)
    assert len(ms) == 2 * len(own.measurements)
    assert {m.host_label for m in ms} == {records.host_label(own.host), "edge-box (eeeeeeee)"}
    assert ms[0].host == own.host.fingerprint  # the run's own host first
    assert R.host_labels(merged) == [records.host_label(own.host), "edge-box (eeeeeeee)"]


def test_later_bench_from_the_same_host_wins(results):
    (own,) = results.bench
    rerun = scaled(own, 2.0, created="2999-01-01T00:00:00Z")
    merged = R.merge_bench(results, [rerun])
    ms = R.measurements(merged)
    assert len(ms) == len(own.measurements)
    before = {m.key: m.latency_ms.p50 for m in own.measurements}
    assert {m.key: m.latency_ms.p50 for m in ms} == {k: 2.0 * v for k, v in before.items()}


def test_speedup_is_against_pytorch_on_the_same_host_and_shape(results):
    ms = {(m.model, m.variant): m for m in results.bench[0].measurements}
    torch_p50 = ms[("uncompressed", "torch")].latency_ms.p50
    asc = ms[("asc-0.90", "fp32")]
    assert R.speedup(results, asc) == pytest.approx(torch_p50 / asc.latency_ms.p50)
    # Another host's PyTorch numbers never serve as this host's baseline.
    edge = on_host(results.bench[0], EDGE, "edge-box")
    edge.measurements[:] = [m for m in edge.measurements if m.runtime != "torch"]
    merged = R.merge_bench(results, [edge])
    edge_asc = next(m for m in R.measurements(merged) if m.host == EDGE and m.model == "asc-0.90")
    assert R.speedup(merged, edge_asc) is None


def test_main_table_rows_and_cells(results):
    table = tables.main_table(results)
    assert len(table.rows) == len(results.evaluations)  # every evaluated (model, variant)
    assert [r[0] for r in table.rows[:4]] == ["uncompressed"] * 4
    kinds = [r[1] for r in table.rows]
    first_strategy = kinds.index("strategy")
    tail = kinds[first_strategy:]  # strategy baselines, then width-compressed models, last
    assert set(tail) == {"strategy", "width"} and tail == sorted(
        tail, key=("strategy", "width").index
    )
    row = next(r for r in table.rows if r[:3] == ["asc-0.90", "asc", "fp32"])
    ev = results.evaluation("asc-0.90", "fp32")
    assert row[3] == "3 (-2)"
    assert row[6:8] == [
        f"{ev.primary:.2f}",
        interval(ev.comparison) if ev.comparison else f"{ev.delta:.2f}",
    ]
    m = next(m for m in results.bench[0].measurements if m.key[1:3] == ("asc-0.90", "fp32"))
    cell = row[table.headers.index("cpu 1x16 p50/p95 ms")]
    speedup = R.speedup(results, m)
    assert cell == f"{m.latency_ms.p50:.2f} / {m.latency_ms.p95:.2f} ({speedup:.2f}x)"
    # Two hosts: the latency columns name them.
    merged = R.merge_bench(results, [on_host(results.bench[0], EDGE, "edge-box")])
    assert "edge-box (eeeeeeee) cpu 1x16 p50/p95 ms" in tables.main_table(merged).headers


def test_markdown_table_has_the_expected_rows(results):
    md = tables.to_markdown(tables.main_table(results))
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + len(results.evaluations)
    ev = results.evaluation("asc-0.20", "torch")
    assert f"| asc-0.20 | asc | torch | 1 (-1,2,4) | 0.0203 | {ev.size_bytes / 1e6:.3g} |" in md


def test_layer_choice_table_is_filled_on_a_real_run(results):
    """Defect 5: strategy models carry no threshold, and the table used to skip every one."""
    table = tables.layer_choice_table(results)
    assert table.headers == ["Removed", "Layers left", "asc", "top", "random"]
    deep = len(results.similarity.selections["0.2"])
    assert [row[:2] for row in table.rows] == [["1", "3"], [str(deep), str(4 - deep)]]
    one = dict(zip(table.headers, table.rows[0], strict=True))
    assert one["asc"] == f"{metric_cell(results, 'asc-0.90')} · layers 2 · t=0.9"
    assert one["top"] == f"{metric_cell(results, 'top-1')} · layers 4"
    # random-1-s1 chose asc-0.90's layer: it shows the numbers of the model it shares
    assert one["random"] == f"{metric_cell(results, 'asc-0.90')} · layers 2"
    assert all(MISSING not in cell for row in table.rows for cell in row)


def paired(results: Results, model: str, variant: str):
    """measure/statistics.py's paired comparison of a real evaluation with the reference's."""
    reference, other = results.reference_evaluation(), results.evaluation(model, variant)
    comparison = compare_prediction_files(
        reference.predictions, other.predictions, "classification"
    )
    return comparison["accuracy"]


def test_layer_choice_table_seeds_off_the_shelf_and_confidence_intervals(results):
    doc = results.dump()
    # A second random seed at depth 1, and the off-the-shelf model at that depth too.
    seed = next(m for m in doc["models"] if m["name"] == "random-1-s1")  # asc-0.90's twin
    doc["models"].append({**seed, "name": "random-1-s2", "seed": 2, "same_as": None})
    ev = next(e for e in doc["evaluations"] if (e["model"], e["variant"]) == ("asc-0.90", "torch"))
    doc["evaluations"].append({**ev, "model": "random-1-s2", "primary": ev["primary"] + 4.0})
    next(m for m in doc["models"] if m["name"] == "tiny-distilbert")["layers"] = 3
    # The paired statistics of asc-0.90 against the uncompressed model, on the real predictions.
    stats = paired(results, "asc-0.90", "torch")
    asc = next(e for e in doc["evaluations"] if (e["model"], e["variant"]) == ("asc-0.90", "torch"))
    asc["comparison"] = stats.to_dict()
    derived = Results.model_validate(doc)
    table = tables.layer_choice_table(derived)
    assert table.headers[-1] == "off-the-shelf"
    one = dict(zip(table.headers, table.rows[0], strict=True))
    sd = 4.0 / 2**0.5  # two values 4 apart
    assert one["random"] == f"{ev['primary'] + 2.0:.2f} ± {sd:.2f} (n=2)"
    assert one["off-the-shelf"] == f"{metric_cell(derived, 'tiny-distilbert')} · tiny-distilbert"
    expected = interval(stats.to_dict())
    assert one["asc"] == f"{asc['primary']:.2f} Δ {expected} · layers 2 · t=0.9"
    assert "paired 95% CI" in table.note
    # The main table shows the interval and the p-value.
    main = tables.main_table(derived)
    row = next(r for r in main.rows if r[:3] == ["asc-0.90", "asc", "torch"])
    cells = dict(zip(main.headers, row, strict=True))
    assert cells["Δ (pts) [95% CI]"] == expected
    assert cells["p (paired)"] == f"{stats.p_value:.3f}"


def test_recommendation_says_whether_the_difference_is_significant(results):
    analysed = analyse(results)
    pick = analysed.recommendation["cpu"]
    stats = paired(results, pick.model, pick.variant)
    text = interval({**stats.to_dict(), "significant": False})  # no star: the verdict is spelt out
    for significant, verdict in ((stats.significant, None), (True, "significant")):
        # Keyed by metric, as a QA comparison is ({"exact": ..., "f1": ...}).
        comparison = {"accuracy": dataclasses.replace(stats, significant=significant).to_dict()}
        derived = with_evaluation(analysed, pick.model, pick.variant, comparison=comparison)
        row = tables.recommendation_table(derived, analysed.recommendation).rows[0]
        verdict = verdict or ("significant" if stats.significant else "not significant")
        assert row[5] == f"{text}, {verdict}"


# -- the decision lines under the recommendation ------------------------------------------------
MINUS = "\u2212"


def _signed(value: float) -> str:
    return "0.00" if round(value, 2) == 0 else f"{value:+.2f}".replace("-", MINUS)


def _not_shown_safe(results: Results, tmp_path: Path) -> tuple[Results, float]:
    """The run and a budget at which the point rule's pick cannot be shown non-inferior: the
    fastest artifact at the gate shape (made wrong on one more example where it predicts as
    the uncompressed model everywhere), the budget between its point drop and its bound."""
    from pipeline_helpers import with_wrong_answers

    reference = results.reference_evaluation().key
    fastest = min(
        (
            m
            for m in results.bench[0].measurements
            if m.shape == (1, 16) and m.key[1:3] != reference
        ),
        key=lambda m: m.latency_ms.p50,
    )
    if results.evaluation(fastest.model, fastest.variant).comparison["rms_difference"] == 0:
        results = with_wrong_answers(results, fastest.model, fastest.variant, 1, tmp_path)
    c = results.evaluation(fastest.model, fastest.variant).comparison
    budget = round((max(-c["delta"], 0.0) - c["ni_low"]) / 2, 1)
    assert max(-c["delta"], 0.0) < budget < -c["ni_low"], c
    results.run.config["gates"]["accuracy_budget"] = budget
    return results, budget


def _decision_lines(md: str) -> list[str]:
    after = md.split("### Recommendation")[1].split("### Main table")[0]
    return [line[2:] for line in after.splitlines() if line.startswith("- ")]


def test_report_says_what_the_point_rule_would_pick_and_why_it_is_not_shown_safe(results, tmp_path):
    from scipy.stats import norm

    derived, budget = _not_shown_safe(results, tmp_path)
    analysed = write_report(derived, tmp_path / "report", with_plots=False)
    shown = analysed.recommendation["cpu"]
    point = recommend(analysed, gates_config(analysed).model_copy(update={"decision": "point"}))
    point = point["cpu"]
    c, s = (analysed.evaluation(p.model, p.variant).comparison for p in (point, shown))
    assert (shown.model, shown.variant) not in (
        (point.model, point.variant),
        ("uncompressed", "torch"),
    )
    lines = _decision_lines((tmp_path / "report" / "report.md").read_text())
    assert lines[0] == (
        f"cpu: {shown.model} {shown.variant}, {shown.speedup:.2f}x, the fastest artifact shown "
        f"non-inferior (within {budget:g} points at one-sided 95%): {_signed(s['delta'])} "
        f"[one-sided 95% lower bound {_signed(s['ni_low'])}] \u2265 {MINUS}{budget:g}"
    )
    assert lines[1] == (
        f"cpu: the point rule would pick {point.model} {point.variant}, {point.speedup:.2f}x, but "
        f"it cannot be shown within {budget:g} points: {_signed(c['delta'])} [one-sided 95% "
        f"lower bound {_signed(c['ni_low'])}] < {MINUS}{budget:g}"
    )
    # The power line: the point rule's pick, from its discordant share.
    share = (c["discordant"]["b"] + c["discordant"]["c"]) / c["n"]
    drop = norm.ppf(0.95) * 100 * (share / c["n"]) ** 0.5
    assert lines[2].startswith(
        f"Power (accuracy): {point.model} {point.variant} and the uncompressed model differ in "
        f"correctness (McNemar's discordant pairs) on {share:.1%} of the {c['n']} evaluation "
        "examples, so the smallest drop the set tells from 0 at one-sided 95% is "
    )
    side = "below" if drop < budget else "not below"
    assert f" = {drop:.2f} points, {side} the {budget:g}-point budget; " in lines[2]
    assert len(lines) == 3


def test_report_under_the_point_rule_says_what_the_bound_shows(results, tmp_path):
    derived, budget = _not_shown_safe(results, tmp_path)
    derived.run.config["gates"]["decision"] = "point"
    analysed = write_report(derived, tmp_path / "report", with_plots=False)
    pick = analysed.recommendation["cpu"]
    c = analysed.evaluation(pick.model, pick.variant).comparison
    lines = _decision_lines((tmp_path / "report" / "report.md").read_text())
    assert lines[0] == (
        f"cpu: {pick.model} {pick.variant}, {pick.speedup:.2f}x, the fastest artifact whose point "
        f"difference is within {budget:g} points (gates.decision: point): {_signed(c['delta'])} "
        f"\u2265 {MINUS}{budget:g}; its one-sided 95% lower bound {_signed(c['ni_low'])} cannot "
        f"show that it loses at most {budget:g} points"
    )
    assert lines[1].startswith(f"Power (accuracy): {pick.model} {pick.variant} and ")


def test_plots_are_png_and_skip_what_cannot_be_drawn(results):
    label = R.host_labels(results)[0]
    assert plots.accuracy_vs_latency(results, label, "cpu", 1, 16).startswith(b"\x89PNG")
    assert plots.accuracy_vs_latency(results, label, "cuda", 1, 16) is None
    assert plots.similarity_heatmap(results).startswith(b"\x89PNG")
    assert plots.latency_scaling(results, label, "cpu", "batch", 16) is None  # one batch size
    batch8 = BenchRun.model_validate(
        {
            **results.bench[0].dump(),
            "created": "2999-01-01T00:00:00Z",
            "measurements": [{**m, "batch": 8} for m in results.bench[0].dump()["measurements"]],
        }
    )
    two_batches = R.merge_bench(results, [batch8])
    assert plots.latency_scaling(two_batches, label, "cpu", "batch", 16).startswith(b"\x89PNG")
    assert plots.reliability_diagrams(results).startswith(b"\x89PNG")
    assert plots.similarity_heatmap(results.model_copy(update={"similarity": None})) is None


def test_report_files_and_reading_order(report_dir):
    md = (report_dir / "report.md").read_text()
    order = [
        md.index(s)
        for s in (
            "Verdict: PASS",
            "### Release gates",
            "### Recommendation",
            "### Main table",
            "### Layer-choice baselines",
            "## Plots",
            "## Details",
        )
    ]
    assert order == sorted(order)
    images = re.findall(r"\]\((plots/[^)]+\.png)\)", md)
    for img in images:
        assert (report_dir / img).read_bytes().startswith(b"\x89PNG")
    # accuracy-latency, accuracy-size, similarity, reliability (one shape: no scaling plots),
    # and the Server scenario's p99 against offered QPS (the run serves each artifact once)
    assert len(images) == len(list((report_dir / "plots").glob("*.png"))) == 5
    assert "plots/server-p99-0-cpu.png" in images


def test_html_is_self_contained(report_dir):
    html = (report_dir / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(images) == 5 and all(s.startswith("data:image/png;base64,") for s in images)
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:|//)", html, re.I)
    assert "<link" not in html and "<script" not in html
    assert 'class="verdict pass"' in html


def test_results_json_round_trips(report_dir, tmp_path):
    written = load_results(report_dir / "results.json")
    assert written.recommendation["cpu"].model is not None
    assert [g.name for g in written.gates] == ["max_accuracy_drop"]
    text = (report_dir / "results.json").read_text()
    assert '"host_label"' not in text.split('"bench"')[1].split('"gates"')[0]
    # Analysing the written file again changes nothing, and rewriting it gives the same bytes.
    assert analyse(written) == written
    write_report(written, tmp_path, with_plots=False)
    assert (tmp_path / "results.json").read_text() == text


def test_failed_verdict_lists_failures(results, tmp_path):
    results.run.config["gates"]["max_size_mb"] = 0.01
    analysed = write_report(results, tmp_path, with_plots=False)
    pick = analysed.recommendation["cpu"]
    md = (tmp_path / "report.md").read_text()
    assert "Verdict: FAIL (1 of 2 gates failed)" in md
    size = results.evaluation(pick.model, pick.variant).size_bytes / 1e6
    assert (
        f"- gate max_size_mb failed: {pick.model} {pick.variant} is {size:.1f} MB > 0.01 MB" in md
    )
    assert 'class="verdict fail"' in (tmp_path / "report.html").read_text()


# -- the bert-99 view ------------------------------------------------------------------------------
BERT99_HEADERS = ("int8 % of fp32", "int8 Δ vs fp32 [95% CI]")


def bert99_cells(table: tables.Table, model: str, variant: str) -> tuple[str, str]:
    row = next(r for r in table.rows if (r[0], r[2]) == (model, variant))
    cells = dict(zip(table.headers, row, strict=True))
    return cells[BERT99_HEADERS[0]], cells[BERT99_HEADERS[1]]


def test_bert99_columns_hold_int8_over_its_own_fp32_with_the_paired_interval(results):
    table = tables.main_table(results)
    assert set(BERT99_HEADERS) <= set(table.headers)
    # The tiny run's int8 rows: ONNX int8-dynamic against the fp32 artifact, and PyTorch's
    # dynamic int8 against PyTorch fp32; both are the uncompressed model's.
    pairs = {
        ("uncompressed", "int8-dynamic"): "fp32",
        ("uncompressed", "torch-dynamic-int8"): "torch",
    }
    for (model, variant), fp32_variant in pairs.items():
        int8, fp32 = results.evaluation(model, variant), results.evaluation(model, fp32_variant)
        percent, delta = bert99_cells(table, model, variant)
        ratio = int8.primary / fp32.primary * 100
        assert percent == f"{ratio:.2f}%" + ("" if ratio >= 99 else " ✗")
        # The interval is int8 vs its own fp32 on the real predictions, not vs the reference.
        own = compare_prediction_files(fp32.predictions, int8.predictions, "classification")
        assert delta == interval(own["accuracy"].to_dict())
        assert own["accuracy"].delta == pytest.approx(int8.primary - fp32.primary)
    # Rows that are not int8 leave the columns blank.
    assert bert99_cells(table, "uncompressed", "fp32") == ("", "")
    assert bert99_cells(table, "asc-0.90", "torch") == ("", "")
    assert "bert-99" in table.note and "†" not in table.note


def test_int8_below_99_percent_of_fp32_is_marked_in_every_output(results, tmp_path):
    fp32 = results.evaluation("uncompressed", "fp32")
    # 98% of fp32: a bert-99 miss. The predictions on disk no longer give this metric, so the
    # interval falls back to the stored one against the uncompressed PyTorch model, flagged.
    missed = with_evaluation(results, "uncompressed", "int8-dynamic", primary=0.98 * fp32.primary)
    table = tables.main_table(missed)
    percent, delta = bert99_cells(table, "uncompressed", "int8-dynamic")
    assert percent == "98.00% ✗"
    assert delta == interval(missed.evaluation("uncompressed", "int8-dynamic").comparison) + "†"
    assert "† those predictions were not readable here" in table.note
    row = next(
        i
        for i, r in enumerate(table.rows)
        if r[:3] == ["uncompressed", "reference", "int8-dynamic"]
    )
    column = table.headers.index(BERT99_HEADERS[0])
    assert table.marks[(row, column)] == "fail"
    # Marked: exactly the int8 rows under 99% of their fp32.
    shares = {
        i: float(r[column].split("%")[0]) for i, r in enumerate(table.rows) if r[column].strip()
    }
    assert set(table.marks) == {(i, column) for i, share in shares.items() if share < 99}
    assert "| **98.00% ✗** |" in tables.to_markdown(table)
    write_report(missed, tmp_path, with_plots=False)
    assert '<td class="num fail">98.00% ✗</td>' in (tmp_path / "report.html").read_text()
    assert "**98.00% ✗**" in (tmp_path / "report.md").read_text()
    # Just at 99% passes, unmarked; just under it never reads "99.00%".
    for share, text in ((0.99, "99.00%"), (0.98999, "98.99% ✗")):
        derived = with_evaluation(
            results, "uncompressed", "int8-dynamic", primary=share * fp32.primary
        )
        assert bert99_cells(tables.main_table(derived), "uncompressed", "int8-dynamic")[0] == text


def test_bert99_interval_falls_back_to_the_stored_one_when_predictions_are_gone(results, tmp_path):
    int8 = results.evaluation("uncompressed", "int8-dynamic")
    moved = with_evaluation(
        results, "uncompressed", "int8-dynamic", predictions=str(tmp_path / "gone.jsonl")
    )
    table = tables.main_table(moved)
    percent, delta = bert99_cells(table, "uncompressed", "int8-dynamic")
    fp32 = results.evaluation("uncompressed", "fp32")
    assert percent.startswith(f"{int8.primary / fp32.primary * 100:.2f}%")
    assert delta == interval(int8.comparison) + "†"
    # The PyTorch int8 row still has its predictions: its interval is still vs its own fp32.
    assert not bert99_cells(table, "uncompressed", "torch-dynamic-int8")[1].endswith("†")


def test_bert99_compares_with_the_model_s_own_fp32_not_the_reference(results):
    # Give the uncompressed fp32 artifact another real evaluation's predictions and metric, one
    # that differs from the reference's: the bert-99 cells must follow the fp32 artifact.
    reference = results.reference_evaluation()
    other = next(
        e for e in results.evaluations if e.variant == "torch" and e.primary != reference.primary
    )
    derived = with_evaluation(
        results, "uncompressed", "fp32", predictions=other.predictions, primary=other.primary
    )
    int8 = derived.evaluation("uncompressed", "int8-dynamic")
    percent, delta = bert99_cells(tables.main_table(derived), "uncompressed", "int8-dynamic")
    ratio = int8.primary / other.primary * 100
    assert percent == f"{ratio:.2f}%" + ("" if ratio >= 99 else " ✗")
    own = compare_prediction_files(other.predictions, int8.predictions, "classification")
    assert delta == interval(own["accuracy"].to_dict())
    assert delta != interval(int8.comparison)  # not the interval against the reference


def test_many_host_flags_are_counted_in_the_hosts_table_and_listed_once_under_notes(
    results, tmp_path
):
    (own,) = results.bench
    flags = [f"machine busy: round spread {n}0% > 10% for cell {n}" for n in range(1, 4)]
    flagged = results.model_copy(
        update={"bench": [BenchRun.model_validate({**own.dump(), "flags": flags})]}
    )
    assert tables.hosts_table(flagged).rows[0][-1] == "3 flags, listed under Notes"
    one = results.model_copy(
        update={"bench": [BenchRun.model_validate({**own.dump(), "flags": flags[:1]})]}
    )
    assert tables.hosts_table(one).rows[0][-1] == flags[0]
    write_report(flagged, tmp_path, with_plots=False)
    md = (tmp_path / "report.md").read_text()
    assert all(md.count(flag) == 1 for flag in flags)


def test_html_paints_only_a_passing_verdict_green():
    from asc_deploy.report.document import Paragraph
    from asc_deploy.report.html import to_html_document

    for verdict, cls in (("PASS (2 of 2 gates)", "pass"), ("FAIL (1 of 2 gates failed)", "fail")):
        html = to_html_document([Paragraph(f"Verdict: {verdict}", strong=True)], "t")
        assert f'class="verdict {cls}"' in html
    noisy = "Verdict: INCONCLUSIVE (1 of 2 gates on noisy measurements)"
    html = to_html_document([Paragraph(noisy, strong=True)], "t")
    assert 'class="verdict inconclusive"' in html and "verdict pass" not in html
    gates = tables.Table("Release gates", ["Gate", "Result"], [["min_speedup", "INCONCLUSIVE"]])
    assert '<td class="inconclusive">INCONCLUSIVE</td>' in to_html_document([gates], "t")


def test_main_table_states_the_constant_prediction_floor(results):
    """The run scored every constant class with the task's metric; the best is the majority
    class of the evaluation split, as the reference's own prediction file counts it."""
    import collections
    import json

    baseline = results.task.constant_baseline
    ref = results.reference_evaluation()
    lines = Path(ref.predictions).read_text().splitlines()
    golds = collections.Counter(json.loads(line)["gold"] for line in lines)
    majority = 100 * max(golds.values()) / sum(golds.values())
    assert baseline.metrics["accuracy"] == pytest.approx(majority)
    assert baseline.prediction in ("negative", "positive")
    note = tables.main_table(results).note
    assert f"A constant prediction ({baseline.prediction}) scores {majority:.2f} accuracy" in note
    floor = with_evaluation(results, ref.model, ref.variant, primary=majority - 1)
    assert "it has not learned the task" in tables.main_table(floor).note
