"""Report building: Pareto frontier, bench merging, tables, plots, HTML and results round-trip."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from asc_deploy.errors import UserError
from asc_deploy.report import plots, tables
from asc_deploy.report import results as R
from asc_deploy.report.pareto import pareto_front
from asc_deploy.report.render import analyse, write_report

FIXTURE = Path(__file__).parent / "fixtures" / "results_example.json"
BUILD, EDGE = "build-box (aaaaaaaa)", "edge-box (bbbbbbbb)"


@pytest.fixture
def results() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(json.loads(FIXTURE.read_text()), out)
    return out


def test_pareto_front_on_hand_made_points():
    #        0: (1, 80)  1: (2, 85)  2: (2, 84) dominated by 1  3: (3, 83) dominated by 1
    #        4: (4, 90)  5: (4, 90) duplicate of 4  6: (0.5, 70)  7: (5, 89) dominated by 4
    points = [(1, 80), (2, 85), (2, 84), (3, 83), (4, 90), (4, 90), (0.5, 70), (5, 89)]
    assert pareto_front(points) == [6, 0, 1, 4, 5]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, float("nan")), (2.0, 1.0)]) == [1]


def test_schema_versions_are_checked():
    R.check_schema({"schema": "asc-deploy.results/1.3"}, R.RESULTS_SCHEMA, "x")  # minor: fine
    with pytest.raises(UserError, match="version 2 is unknown"):
        R.check_schema({"schema": "asc-deploy.results/2"}, R.RESULTS_SCHEMA, "x")
    with pytest.raises(UserError, match="not a asc-deploy.results"):
        R.check_schema({"schema": "asc-deploy.bench/1"}, R.RESULTS_SCHEMA, "x")
    with pytest.raises(UserError, match="no 'schema'"):
        R.check_schema([], R.RESULTS_SCHEMA, "x")


def test_merge_bench_tags_hosts_and_drops_duplicates(results):
    edge = results["bench"][1]
    only_build = {**results, "bench": results["bench"][:1]}
    merged = R.merge_bench(only_build, [edge, copy.deepcopy(edge)])
    assert len(merged["bench"]) == 2 and len(only_build["bench"]) == 1
    ms = R.measurements(merged)
    assert len(ms) == 2 * 9 * 2  # hosts x artifacts x shapes
    assert {m["host_label"] for m in ms} == {BUILD, EDGE}
    assert ms[0]["host"] == "a" * 64  # the run's own host first


def test_later_bench_from_the_same_host_wins(results):
    rerun = copy.deepcopy(results["bench"][0])
    rerun["created"] = "2026-11-23T08:00:00Z"
    for m in rerun["measurements"]:
        m["latency_ms"]["p50"] *= 2
    merged = R.merge_bench(results, [rerun])
    build = [m for m in R.measurements(merged) if m["host_label"] == BUILD]
    assert len(build) == 18
    ref_torch = next(m for m in build if m["variant"] == "torch" and m["batch"] == 1)
    assert ref_torch["latency_ms"]["p50"] == 24.0


def test_speedup_is_against_pytorch_on_the_same_host_and_shape(results):
    index = R.measurement_index(results)
    m = index[("b" * 64, "asc-0.90", "int8-dynamic", "cpu", 8, 128)]
    assert R.speedup(results, m, index) == pytest.approx(60.0 / 26.4)


def test_main_table_rows_and_cells(results):
    table = tables.main_table(results)
    assert len(table.rows) == 16  # every evaluated (model, variant)
    assert [r[0] for r in table.rows[:4]] == ["uncompressed"] * 4
    assert table.rows[-1][0] == "top-0.85"  # strategy baselines last
    row = next(r for r in table.rows if r[:3] == ["asc-0.90", "asc", "int8-dynamic"])
    assert row[3:8] == ["5 (-3)", "20.9", "21.6", "90.30", "-0.70"]
    build_1x128 = table.headers.index(f"{BUILD} cpu 1x128 p50/p95 ms")
    assert row[build_1x128] == "3.90 / 4.29 (3.08x)"
    single = tables.main_table({**results, "bench": results["bench"][:1]})
    assert "cpu 1x128 p50/p95 ms" in single.headers


def test_markdown_table_has_the_expected_rows(results):
    md = tables.to_markdown(tables.main_table(results))
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(lines) == 17  # header + 16 rows
    assert "| asc-0.80 | asc | int8-dynamic | 3 (-2,3,5) | 17.4 | 18.1 | 88.00 | -3.00 |" in md


def test_strategy_table_reports_seed_spread(results):
    table = tables.strategy_table(results)
    assert table.headers == ["Threshold", "Removed", "asc", "random", "top"]
    row = next(r for r in table.rows if r[0] == "0.85")
    assert row == ["0.85", "2", "90.40", "89.10 ± 0.28 (n=2)", "87.50"]


def test_plots_are_png_and_skip_what_cannot_be_drawn(results):
    png = plots.accuracy_vs_latency(results, BUILD, "cpu", 1, 128)
    assert png.startswith(b"\x89PNG")
    assert plots.accuracy_vs_latency(results, BUILD, "cuda", 1, 128) is None
    assert plots.similarity_heatmap(results).startswith(b"\x89PNG")
    assert plots.latency_scaling(results, BUILD, "cpu", "batch", 128).startswith(b"\x89PNG")
    assert plots.latency_scaling(results, BUILD, "cpu", "sequence", 1) is None  # one length
    assert plots.reliability_diagrams(results).startswith(b"\x89PNG")
    assert plots.similarity_heatmap({**results, "similarity": None}) is None


def test_report_files_and_reading_order(report_dir):
    md = (report_dir / "report.md").read_text()
    order = [
        md.index(s)
        for s in (
            "Verdict: PASS",
            "### Release gates",
            "### Recommendation",
            "### Main table",
            "## Plots",
            "## Details",
        )
    ]
    assert order == sorted(order)
    for img in re.findall(r"\]\((plots/[^)]+\.png)\)", md):
        assert (report_dir / img).read_bytes().startswith(b"\x89PNG")
    assert len(list((report_dir / "plots").glob("*.png"))) == 7


def test_html_is_self_contained(report_dir):
    html = (report_dir / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(images) == 7 and all(s.startswith("data:image/png;base64,") for s in images)
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:|//)", html, re.I)
    assert "<link" not in html and "<script" not in html
    assert 'class="verdict pass"' in html


def test_results_json_round_trips(report_dir, tmp_path):
    written = R.load_results(report_dir / "results.json")
    assert written["recommendation"]["cpu"]["model"] == "asc-0.90"
    assert [g["name"] for g in written["gates"]] == [
        "max_accuracy_drop",
        "min_speedup",
        "max_size_mb",
    ]
    # Analysing the written file again changes nothing, and rewriting it gives the same bytes.
    assert analyse(written) == written
    write_report(written, tmp_path, with_plots=False)
    assert (tmp_path / "results.json").read_text() == (report_dir / "results.json").read_text()


def test_failed_verdict_lists_failures(results, tmp_path):
    results["run"]["config"]["gates"]["max_size_mb"] = 50
    write_report(results, tmp_path, with_plots=False)
    md = (tmp_path / "report.md").read_text()
    assert "Verdict: FAIL (1 of 3 gates failed)" in md
    assert "- gate max_size_mb failed: asc-0.85 fp32 is 77.1 MB > 50.0 MB" in md
    assert 'class="verdict fail"' in (tmp_path / "report.html").read_text()
