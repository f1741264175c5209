"""One real `asc-deploy run` of extractive QA on tiny models, the way offline-squad2-minilm runs.

SQuAD-format files split by article, a tiny BERT with a QA head, ASC at a target depth against
top / bottom / random with screening on held-out *training* questions, distilled recovery, fp32
and int8-dynamic artifacts of every recovered model, a bench and the report. The report's
EM / F1 tables are read from what the stages wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_helpers import run_to_results, write_model

CONTEXT = (
    "the king was born in paris . the queen was born in london . "
    "the war ended in the year of peace . "
    "the river of the city is long and the capital of france is paris . "
    "music and love never ended ."
)
QUESTIONS = [
    ("where was the king born ?", "paris"),
    ("who was born in london ?", "the queen"),
    ("what is the capital of france ?", "paris"),
    ("what never ended ?", "music and love"),
    ("who died ?", None),
    ("what is long ?", "the river of the city"),
]


def _squad(path: Path, articles: int, prefix: str) -> None:
    data = []
    for a in range(articles):
        qas = [
            {
                "id": f"{prefix}{a}-{i}",
                "question": question,
                "answers": [{"text": answer, "answer_start": CONTEXT.index(answer)}]
                if answer
                else [],
                "is_impossible": answer is None,
            }
            for i, (question, answer) in enumerate(QUESTIONS)
        ]
        data.append({"title": f"{prefix}{a}", "paragraphs": [{"context": CONTEXT, "qas": qas}]})
    path.write_text(json.dumps({"version": "v2.0", "data": data}))


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, tiny_tokenizer_dir):
    tmp = tmp_path_factory.mktemp("qa-run")
    _squad(tmp / "train.json", 6, "t")
    _squad(tmp / "dev.json", 2, "d")
    write_model(tmp / "model", tiny_tokenizer_dir, "question-answering")
    config = {
        "name": "qa",
        "output_dir": str(tmp / "exports"),
        "model": str(tmp / "model"),
        "task": {
            "family": "question-answering",
            "train_file": str(tmp / "train.json"),
            "eval_file": str(tmp / "dev.json"),
            "qa": {"max_length": 48, "stride": 16},
            "holdout": 6,  # screening scores on questions no training step saw
        },
        "finetune": {"preset": "cpu-fast", "max_steps": 4, "batch_size": 8},
        "recovery": {"preset": "cpu-fast", "max_steps": 4, "batch_size": 8, "distillation": True},
        "screening": {"fraction": 0.5, "keep": 1, "samples": 6},
        "asc": {"thresholds": [], "remove_layers": [1]},
        "comparisons": {"strategies": ["top", "bottom"], "random_seeds": [1]},
        "export": {
            "variants": ["fp32", "int8-dynamic"],
            "models": ["reference", "asc", "strategy"],
            "validation_samples": 6,
        },
        "bench": {
            "batch_sizes": [1],
            "sequence_lengths": [32],
            "rounds": 1,
            "warmup": 1,
            "min_iterations": 3,
            "min_seconds": 0.01,
        },
        "gates": {"max_accuracy_drop": 100.0, "speedup_shape": [1, 32]},
    }
    return run_to_results(tmp, "qa", config)


def test_qa_run_reports_em_and_f1_with_cis_for_every_recovered_model_and_artifact(qa_run):
    root, results = qa_run
    continued = [m for m in results["models"] if (m["screening"] or {}).get("continued")]
    assert len(continued) == 1  # one candidate per depth goes on to the full recovery
    name = continued[0]["name"]
    screened_out = [m for m in results["models"] if m["screening"] and m["name"] != name]
    assert {m["strategy"] for m in screened_out} | {continued[0]["strategy"]} == {
        "asc",
        "top",
        "bottom",
    }
    evaluations = {(e["model"], e["variant"]): e for e in results["evaluations"]}
    for model in ("uncompressed", name):
        for variant in ("torch", "fp32", "int8-dynamic"):
            ev = evaluations[(model, variant)]
            subsets = {f"{s}_{m}" for s in ("HasAns", "NoAns") for m in ("exact", "f1")}
            assert set(ev["comparisons"]) == {"exact", "f1"} | subsets, (model, variant)
            assert ev["comparison"] == ev["comparisons"]["f1"]  # the primary metric
            for stats in ev["comparisons"].values():
                assert stats["ci_low"] <= stats["delta"] <= stats["ci_high"]
                assert stats["other"] == pytest.approx(ev["metrics"][stats["metric"]])
    md = (root / "report" / "report.md").read_text()
    table = md.split("### Every metric, paired with the uncompressed model")[1].split("###")[0]
    assert (
        "| Model | Variant | exact | Δ exact [95% CI] | f1 | Δ f1 [95% CI] | HasAns_f1 | "
        "Δ HasAns_f1 [95% CI] | NoAns_f1 | Δ NoAns_f1 [95% CI] |"
    ) in table
    ref = evaluations[("uncompressed", "torch")]["metrics"]
    for variant in ("torch", "fp32", "int8-dynamic"):
        ev = evaluations[(name, variant)]
        row = table.split(f"| {name} | {variant} |")[1].splitlines()[0]
        for metric in ("exact", "HasAns_f1", "NoAns_f1"):
            stats = ev["comparisons"][metric]
            # A subset's paired delta is the difference of the official scorer's subset scores.
            assert stats["delta"] == pytest.approx(ev["metrics"][metric] - ref[metric])
            cell = f"{stats['delta']:+.2f} [{stats['ci_low']:+.2f}, {stats['ci_high']:+.2f}]"
            assert f"| {ev['metrics'][metric]:.2f} | {cell}" in row, (metric, row)
    layer_choice = md.split("### Layer-choice baselines")[1].split("###")[0]
    assert f"layers {','.join(map(str, continued[0]['removed_layers']))}" in layer_choice
    abstain = 100 * sum(a is None for _, a in QUESTIONS) / len(QUESTIONS)  # 1 of 6 unanswerable
    baseline = results["task"]["constant_baseline"]
    assert baseline["prediction"] == "no answer"
    assert baseline["metrics"]["f1"] == pytest.approx(abstain) == baseline["metrics"]["exact"]
    assert f"A constant prediction (no answer) scores {abstain:.2f} f1 here" in md
    assert "screened out" in layer_choice and "### Screening" in md


def test_report_says_what_asc_did_at_each_target_depth(qa_run):
    """Reached: the threshold and the layers; not reached: the reason the select stage gave."""
    from asc_deploy.records import DepthTarget, load_results
    from asc_deploy.report import render

    root, results = qa_run
    (target,) = results["similarity"]["depth_targets"]
    asc = next(m for m in results["models"] if m["name"] == "asc-k1")
    assert target["count"] == 1 and target["layers"] == asc["removed_layers"]
    md = (root / "report" / "report.md").read_text()
    assert f"ASC at 1 removed: t={target['threshold']:.4f}, layers {target['layers'][0]}." in md
    loaded = load_results(root / "report" / "results.json")
    reason = "no threshold in (0, 1] makes the ASC rule remove exactly 3 layers"
    missed = DepthTarget(count=3, threshold=None, layers=None, reason=reason)
    similarity = loaded.similarity.model_copy(update={"depth_targets": [missed]})
    (paragraph,) = render._similarity_scale(loaded.model_copy(update={"similarity": similarity}))
    assert paragraph.text.endswith(f"ASC at 3 removed: {reason}.")


def test_a_model_that_stops_answering_is_neither_recommended_nor_passed(qa_run):
    """SQuAD 2.0's F1 cannot tell a weak reader from one that abstains on everything (the full-size
    study's pruned winner: F1 +0.36, answerable F1 46 -> 3): the official subsets are guarded."""
    import copy

    from asc_deploy.records import Pick, Results
    from asc_deploy.report.gates import accuracy_gate
    from asc_deploy.report.recommend import within_budget

    _, doc = qa_run
    assert doc["task"]["guarded_metrics"] == ["HasAns_f1", "NoAns_f1"]
    results = Results.model_validate(doc)
    ref = results.reference_evaluation()
    for ev in results.evaluations:  # recomputed from the metrics the stages stored
        assert set(ev.guarded_deltas) == {"HasAns_f1", "NoAns_f1"}
        for metric, delta in ev.guarded_deltas.items():
            assert delta == pytest.approx(ev.metrics[metric] - ref.metrics[metric], abs=1e-4)
    name = next(m["name"] for m in doc["models"] if (m["screening"] or {}).get("continued"))
    abstains = copy.deepcopy(doc)  # the real record, its answerable F1 gone and its F1 kept
    record = next(
        e for e in abstains["evaluations"] if (e["model"], e["variant"]) == (name, "int8-dynamic")
    )
    record["primary"] = record["metrics"]["f1"] = ref.metrics["f1"]
    record["metrics"]["HasAns_f1"] = ref.metrics["HasAns_f1"] - 40
    abstains = Results.model_validate(abstains)
    assert abstains.evaluation(name, "int8-dynamic").delta == 0
    # The point rule (the edit changed the metrics, not the paired comparisons).
    assert (name, "int8-dynamic") not in within_budget(abstains, 1.0, "point")
    pick = Pick(model=name, variant="int8-dynamic")
    gate = accuracy_gate(abstains, {"cpu": pick}, 1.0, "recommended", "point")
    assert not gate.passed and gate.value == pytest.approx(40, abs=1e-3)
    assert gate.reason == f"{name} int8-dynamic drops 40.0 points of HasAns_f1 > 1.0"


def test_non_inferiority_bounds_the_guarded_subsets_too(qa_run):
    """Within budget only when the one-sided bound of F1 and of each official subset clears it,
    on the comparisons the run stored."""
    from asc_deploy.records import Results
    from asc_deploy.report.recommend import within_budget

    _, doc = qa_run
    results = Results.model_validate(doc)
    reference = results.reference_evaluation().key
    for budget in (1.0, 20.0, 100.0):
        expected = {
            ev.key
            for ev in results.evaluations
            if ev.key == reference
            or all(
                ev.comparisons[metric]["ni_low"] >= -budget
                for metric in ("f1", "HasAns_f1", "NoAns_f1")
            )
        }
        assert within_budget(results, budget) == expected
