"""One real `asc-deploy run` on tiny models per session, shared by pipeline and report tests.

The report, gate and CLI tests read the results.json this run writes, so every field they see
is one the pipeline really produces (no hand-written fixture can invent one). A test that needs
other values derives them from this run's Results.

The run: a 4-layer BERT whose layer 2 is (almost) the identity, fine-tuned for 6 steps on 48
SST-2-style rows; ASC at 0.9 (removes layer 2) and 0.2; top and random (one seed) at the same
depths (random seed 1 also draws layer 2: a twin of asc-0.90); one width target (APC) on the
uncompressed model and on both 1-layer-removed models; a 2-layer DistilBERT off the shelf; the
quantised baselines; fp32 ONNX export; a bench at cpu 1x16 and a short LoadGen Server run per
artifact.

A second, smaller run (`eval_holdout_run`) reserves an eval holdout from its training split, so
that the decisions move there: the same tiny model on 64 training rows, ASC and one strategy,
fp32 artifacts and the quantised baselines, no width axis, off-the-shelf model or LoadGen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

POSITIVE = "good great best funny love".split()
NEGATIVE = "bad terrible worst boring hate".split()


def write_data(folder: Path) -> None:
    folder.mkdir()
    rows = [
        f"the movie was {(POSITIVE if i % 2 else NEGATIVE)[i % 5]} and the {w}\t{i % 2}"
        for i, w in enumerate(["plot", "music", "actor", "story", "ending", "sound"] * 8)
    ]
    (folder / "train.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    (folder / "dev.tsv").write_text("text\tlabel\n" + "\n".join(rows[:24]) + "\n")


def write_holdout_data(folder: Path) -> None:
    """64 training rows for the eval-holdout run: 60 distinct sentences, shuffled, then four that
    repeat trained-on ones inside the eval reserve (rows 32-55 with task.holdout 8 and
    task.eval_holdout 24), which the reserve must leave out; the dev split repeats four eval
    reserve sentences (counted as shared, no leak) and 20 trained-on ones."""
    import random

    rows = [
        (f"the movie was {word} and the {noun}", int(word in POSITIVE))
        for word in POSITIVE + NEGATIVE
        for noun in ["plot", "music", "actor", "story", "ending", "sound"]
    ]
    random.Random(0).shuffle(rows)
    train = rows[:50] + rows[:4] + rows[50:]  # rows 50-53 repeat rows 0-3
    dev = train[:20] + train[40:44]
    folder.mkdir()
    for name, split in (("train.tsv", train), ("dev.tsv", dev)):
        lines = "".join(f"{text}\t{label}\n" for text, label in split)
        (folder / name).write_text("text\tlabel\n" + lines)


def write_model(folder: Path, tokenizer_dir: Path, head: str = "classification") -> None:
    """A tiny BERT whose layer 2 is (almost exactly) the identity, so ASC has a layer to find."""
    import torch
    from conftest import tiny_config
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    config = tiny_config("bert", num_layers=4)
    config.initializer_range = 0.3  # large weights: the other layers really change the states
    torch.manual_seed(0)
    factory = {
        "classification": AutoModelForSequenceClassification,
        "question-answering": AutoModelForQuestionAnswering,
    }[head]
    model = factory.from_config(config)
    layer = model.bert.encoder.layer[1]
    with torch.no_grad():
        for dense in (layer.attention.output.dense, layer.output.dense):
            dense.weight.zero_()
            dense.bias.zero_()
        for norm in (layer.attention.output.LayerNorm, layer.output.LayerNorm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)


def run_config(tmp: Path, name: str, **gates) -> Path:
    """The run config (YAML) of the tiny run under `name`, with `gates` overriding the gates."""
    config = tiny_config(tmp, name)
    config["gates"].update(gates)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def tiny_config(tmp: Path, name: str) -> dict:
    """The tiny run's config: ASC at 0.9 and 0.2, two strategies, a DistilBERT off the shelf,
    quantised baselines, fp32 artifacts, a short bench with LoadGen's Server scenario."""
    return {
        "name": name,
        "output_dir": str(tmp / "exports"),
        "model": str(tmp / "model"),
        "model_finetuned": True,
        "task": {"preset": "sst2", "data_dir": str(tmp / "data"), "max_length": 32},
        "finetune": {"preset": "cpu-fast", "max_steps": 6, "batch_size": 8},
        "recovery": {"preset": "cpu-fast", "max_steps": 6, "batch_size": 8},
        "asc": {"thresholds": [0.9, 0.2]},
        # The width axis: hidden 32 -> 16 and FFN 64 -> 32, alone and on both 1-layer-removed
        # models (asc-0.90 and top-1), at step 0 (structured pruning) then recovery.
        "apc": {"targets": [{"hidden": 16, "ffn": 32}], "depths": [0, 1]},
        "comparisons": {
            "strategies": ["top", "random"],
            "random_seeds": [1],
            # An off-the-shelf compressed model of another architecture, fine-tuned by the run.
            "off_the_shelf": [{"name": "tiny-distilbert", "model": str(tmp / "distilbert")}],
            "quantized_baselines": ["torch-dynamic-int8", "ort-dynamic-int8"],
        },
        "export": {"variants": ["fp32"], "validation_samples": 8},
        "bench": {
            "batch_sizes": [1],
            "sequence_lengths": [16],
            "rounds": 1,
            "warmup": 1,
            "min_iterations": 3,
            "min_seconds": 0.01,
            # LoadGen's Server scenario, one short run per artifact at a fixed rate: the QPS gate
            # and the report's serving table read real records. The bound is loose so that a
            # loaded test machine (a queue that grows for 2 s) still gives VALID runs.
            "scenarios": {
                "run": ["Server"],
                "server_target_qps": 250,
                "latency_bound_ms": 10000,
                "min_duration_s": 0.3,
                "min_query_count": 500,
                "probe_duration_s": 0.3,
            },
        },
        "gates": {"speedup_shape": [1, 16]},
    }


def eval_holdout_config(tmp: Path, name: str) -> dict:
    """The eval-holdout run's config: the tiny run's, on `write_holdout_data`'s rows, with
    task.holdout 8 and task.eval_holdout 24 (24 rows left to train on) and less to build."""
    config = tiny_config(tmp, name)
    config["task"].update(data_dir=str(tmp / "holdout-data"), holdout=8, eval_holdout=24)
    config["asc"] = {"thresholds": [0.9]}
    config.pop("apc")
    config["comparisons"].update(strategies=["top"], off_the_shelf=[])
    config["bench"].pop("scenarios")
    return config


def with_wrong_answers(
    results, model: str, variant: str, k: int, folder: Path, eval_holdout: bool = False
):
    """The run's Results as if (model, variant) had got k more examples wrong, ones the
    uncompressed model gets right, on the evaluation split or (`eval_holdout`) on the eval
    holdout: its predictions file rewritten under `folder`, its accuracy and paired
    comparisons recomputed from it with the statistics the pipeline compares with."""
    from asc_deploy.measure.fidelity import is_correct
    from asc_deploy.measure.statistics import compare_predictions
    from asc_deploy.records import Results
    from asc_deploy.tasks.evaluation import load_predictions, save_predictions

    def scored(ev):
        return ev.eval_holdout if eval_holdout else ev

    reference = load_predictions(scored(results.reference_evaluation()).predictions)
    records = load_predictions(scored(results.evaluation(model, variant)).predictions)
    right = [i for i, r in enumerate(reference) if is_correct(r)]
    assert len(right) >= k and all(is_correct(records[i]) for i in right[:k])
    for i in right[:k]:
        records[i]["prediction"] = 1 - records[i]["prediction"]  # binary labels: now wrong
    suffix = "-eval-holdout" if eval_holdout else ""
    path = save_predictions(folder / f"{model}-{variant}{suffix}.jsonl", records)
    stats = compare_predictions(reference, records, results.task.family)
    primary = stats[results.task.primary_metric]
    doc = results.dump()
    row = next(e for e in doc["evaluations"] if (e["model"], e["variant"]) == (model, variant))
    if eval_holdout:
        row = row["eval_holdout"]  # its comparisons are by metric only
    else:
        row["comparison"] = primary.to_dict()
    row.update(
        predictions=str(path),
        primary=primary.other,
        metrics={**row["metrics"], primary.metric: primary.other},
        comparisons={metric: s.to_dict() for metric, s in stats.items()},
    )
    return Results.model_validate(doc)


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`asc-deploy ARGS` in a fresh process, quiet."""
    env = {**os.environ, "ASC_QUIET": "1"}
    command = [sys.executable, "-c", "from asc_deploy.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, **kwargs)


def make_workspace(tmp: Path, tokenizer_dir: Path) -> Path:
    """Data (the eval-holdout run's too), the tiny model and the off-the-shelf model of the
    tiny run, under `tmp`."""
    from conftest import tiny_model
    from transformers import AutoTokenizer

    write_data(tmp / "data")
    write_holdout_data(tmp / "holdout-data")
    write_model(tmp / "model", tokenizer_dir)
    tiny_model("distilbert", "classification", num_layers=2).save_pretrained(tmp / "distilbert")
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp / "distilbert")
    return tmp


@pytest.fixture(scope="session")
def pipeline_workspace(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """Data, the tiny model and the off-the-shelf model of the tiny run."""
    return make_workspace(tmp_path_factory.mktemp("pipeline"), tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def full_run(pipeline_workspace) -> tuple[Path, dict]:
    """The tiny run, once per session: (its output folder, its results.json as written).

    The pipeline tests rerun this config (with other gates), which rewrites its report; a copy
    of the first results.json is kept as `full-results.json` for the report tests.
    """
    config = run_config(pipeline_workspace, "full", max_accuracy_drop=100.0)
    result = cli("run", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    root = pipeline_workspace / "exports" / "full"
    shutil.copyfile(root / "report" / "results.json", pipeline_workspace / "full-results.json")
    return root, json.loads((root / "report" / "results.json").read_text())


@pytest.fixture(scope="session")
def run_results_file(full_run, pipeline_workspace) -> Path:
    """The tiny run's results.json as the run wrote it (read-only: copy before changing)."""
    return pipeline_workspace / "full-results.json"


@pytest.fixture(scope="session")
def eval_holdout_run(pipeline_workspace) -> tuple[Path, dict]:
    """The eval-holdout run, once per session: (its output folder, its results.json), under
    gates that pass (the accuracy gate at 100 points) so the report tests derive the rest."""
    config = eval_holdout_config(pipeline_workspace, "held")
    config["gates"]["max_accuracy_drop"] = 100.0
    return run_to_results(pipeline_workspace, "held", config)


def run_to_results(workspace: Path, name: str, config: dict) -> tuple[Path, dict]:
    """`asc-deploy run` on `config` saved as <workspace>/<name>.yaml, which must pass: (its
    output folder, its results.json)."""
    path = workspace / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    result = cli("run", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    root = workspace / "exports" / name
    return root, json.loads((root / "report" / "results.json").read_text())


def without_stored_bounds(doc: dict) -> dict:
    """`doc` (a results.json) as written before comparisons stored the one-sided bound and the
    gates had `decision`."""
    for ev in doc["evaluations"]:
        for comparison in (ev["comparison"], *ev["comparisons"].values()):
            for field in ("ni_low", "ni_confidence", "rms_difference"):
                del comparison[field]
    del doc["run"]["config"]["gates"]["decision"]
    return doc
