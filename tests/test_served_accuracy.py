"""Served accuracy: every evaluation at batch 1 (what the gates use) and at a server's batch.

The pipeline tests read the real tiny run's results.json; the int8 tests build real MiniLM-L6
artifacts, because batch dependence is a property of ONNX Runtime's int8 kernels, not of a
hand-written record.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from asc_deploy.records import Results, load_results
from asc_deploy.report import tables
from asc_deploy.stages import measure
from asc_deploy.stages.core import Context, StageStore
from asc_deploy.tasks.evaluation import load_predictions, prediction_flips


@pytest.fixture
def results(run_results_file) -> Results:
    return load_results(run_results_file)


def with_flips(results: Results, model: str, variant: str, flips: int) -> Results:
    doc = results.dump()
    for ev in doc["evaluations"]:
        if (ev["model"], ev["variant"]) == (model, variant):
            ev["batched"]["flips"] = flips
    return Results.model_validate(doc)


def test_every_evaluation_is_served_at_batch_1_and_at_the_server_batch(results, full_run):
    task_metric = results.task.primary_metric
    assert results.evaluations
    for ev in results.evaluations:
        assert ev.batch_size == 1
        # bench.batch_sizes is [1]: the largest batch is Triton's dynamic batcher's, 64.
        assert ev.batched is not None and ev.batched.batch_size == 64
        served = load_predictions(ev.predictions)
        batched = load_predictions(ev.batched.predictions)
        assert len(served) == len(batched) == ev.examples
        assert ev.batched.flips == prediction_flips(served, batched)
        assert ev.flip_rate == pytest.approx(ev.batched.flips / ev.examples)
        correct = sum(p["prediction"] == p["gold"] for p in served)
        assert ev.metrics[task_metric] == pytest.approx(100 * correct / ev.examples)


def test_flip_rate_is_recomputed_from_the_flips(results):
    doc = results.dump()
    doc["evaluations"][0]["flip_rate"] = 0.9  # an edited rate is never believed
    ev = Results.model_validate(doc).evaluations[0]
    assert ev.flip_rate == pytest.approx(ev.batched.flips / ev.examples)
    doc["evaluations"][0]["batched"]["flips"] = ev.examples + 1
    with pytest.raises(ValueError, match="exceeds examples"):
        Results.model_validate(doc)


def test_main_table_shows_both_batches_and_flags_a_batch_dependent_variant(results):
    flagged = with_flips(results, "asc-0.90", "fp32", 1)  # 1 of 24 examples: 4.17%
    table = tables.main_table(flagged)
    metric = results.task.primary_metric
    assert {f"{metric} b1", f"{metric} b64", "Flip %"} <= set(table.headers)
    row = next(r for r in table.rows if r[0] == "asc-0.90" and r[2] == "fp32")
    ev = flagged.evaluation("asc-0.90", "fp32")
    cells = dict(zip(table.headers, row, strict=True))
    assert cells[f"{metric} b1"] == f"{ev.primary:.2f}"
    assert cells[f"{metric} b64"] == f"{ev.batched.primary:.2f}"
    assert cells["Flip %"] == "4.17 batch-dependent"
    assert table.marks[(table.rows.index(row), table.headers.index("Flip %"))] == "fail"
    # At or under the bound no flag: the default bound is 0.5%, a bound of 5% admits 4.17%.
    loose = tables.main_table(flagged, flip_bound=0.05)
    assert loose.rows[table.rows.index(row)][table.headers.index("Flip %")] == "4.17"
    assert "batch-dependent above 0.5%" in table.note


def test_report_markdown_has_the_flip_column(report_dir_served):
    md = (report_dir_served / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Model | Kind |"))
    assert "| accuracy b1 |" in header and "| accuracy b64 | Flip % |" in header


@pytest.fixture(scope="module")
def report_dir_served(tmp_path_factory, run_results_file) -> Path:
    from asc_deploy.report.render import write_report

    out = tmp_path_factory.mktemp("served-report")
    write_report(load_results(run_results_file), out, with_plots=False)
    return out


# -- real int8 artifacts ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_int8(tmp_path_factory, minilm_dir, shared_data):
    """Real MiniLM-L6 (its classification head freshly initialised) as fp32, dynamic and
    static int8 artifacts, and the evaluate stage's records of the int8 ones on 256 SST-2 dev
    sentences at batch 1 and 64."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from asc_deploy.config import ExportConfig, RunConfig, TaskConfig
    from asc_deploy.models.loading import load_tokenizer
    from asc_deploy.stages.deploy import build_variant, export_model
    from asc_deploy.tasks.presets import build_task

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("minilm-int8")
    model_dir = root / "model"  # the head saved once, so export validates the same weights
    AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=2).save_pretrained(
        model_dir
    )
    load_tokenizer(minilm_dir).save_pretrained(model_dir)
    task_cfg = TaskConfig(preset="sst2", data_dir=shared_data / "sst2", max_eval_samples=256)
    task = build_task(task_cfg)
    settings = ExportConfig(validation_samples=8, sample_inputs=8, calibration_samples=64)
    export_model(model_dir, root / "fp32", task, settings)
    tokenizer = load_tokenizer(model_dir)
    for variant in ("int8-dynamic", "int8-static"):
        build_variant(variant, root / "fp32", root / variant, settings, task, tokenizer)
    config = RunConfig(model=str(model_dir), task=task_cfg)
    store = StageStore(Context(root / "run"))
    return {
        variant: store.run(
            measure.evaluate,
            config,
            variant,
            source=root / variant,
            task=task,
            model="minilm",
            variant=variant,
        )  # fmt: skip
        for variant in ("int8-dynamic", "int8-static")
    }


@pytest.mark.real_model
@pytest.mark.slow
def test_static_int8_is_batch_invariant_and_dynamic_int8_is_not(minilm_int8):
    static, dynamic = minilm_int8["int8-static"], minilm_int8["int8-dynamic"]
    assert static.examples == dynamic.examples == 256
    # Calibrated, fixed scales: a request's int8 values cannot depend on its batch-mates.
    assert static.batched.flips == 0 and static.flip_rate == 0.0
    assert static.batched.metrics == static.metrics
    # Scales computed over the whole batch (and its padding): some predictions change.
    assert dynamic.batched.flips > 0 and dynamic.flip_rate > 0
    assert dynamic.flip_rate == pytest.approx(dynamic.batched.flips / 256)
