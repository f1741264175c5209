"""Screening by successive halving: short recoveries scored on held-out *training* examples."""

from __future__ import annotations

import json
import pickle

import pytest
import yaml
from pipeline_helpers import cli, run_config

from asc_deploy.config import RunConfig, load_run_config
from asc_deploy.errors import UserError
from asc_deploy.tasks.holdout import held_out_scoring, reserve
from asc_deploy.tasks.presets import build_task


class _NoEvaluation:
    """A task whose evaluation split must never be read."""

    def __init__(self, task):
        self._task = task

    def __getattr__(self, name):
        return getattr(self._task, name)

    def load_examples(self, split, max_samples=None):
        if split == "eval":
            raise AssertionError("the evaluation split was read")
        return self._task.load_examples(split, max_samples)


def _task(workspace):
    return build_task(load_run_config(run_config(workspace, "screen")).task)


def test_the_reserve_is_never_trained_on_and_never_reads_evaluation(pipeline_workspace):
    base = _NoEvaluation(_task(pipeline_workspace))
    train = base.load_examples("train")
    task = reserve(base, 8)
    fit, held = task.load_examples("train"), task.held_out()
    assert fit + held == train and len(held) == 8
    assert task.load_examples("train", 3) == fit[:3] and task.held_out(2) == held[:2]
    score = held_out_scoring(task, 5, "screening.samples")
    assert score.load_examples("eval") == held[:5]
    with pytest.raises(UserError):
        score.load_examples("train")
    with pytest.raises(UserError, match="too few to reserve"):
        reserve(base, len(train)).load_examples("train")
    assert task.data_identity("train") != base.data_identity("train")
    assert score.data_identity("eval") != task.data_identity("train")
    assert reserve(base, 0) is base
    config = load_run_config(run_config(pipeline_workspace, "screen")).task
    built = build_task(config.model_copy(update={"holdout": 8}))  # what every stage is given
    assert built.load_examples("train") == fit and built.held_out() == held


def test_a_decision_on_a_task_without_reserve_names_the_setting(pipeline_workspace):
    with pytest.raises(UserError, match="screening.samples .* set task.holdout"):
        held_out_scoring(_task(pipeline_workspace), 8, "screening.samples")


def test_a_reserved_task_survives_pickling_for_the_ray_executor(pipeline_workspace):
    task = reserve(_task(pipeline_workspace), 8)
    copy = pickle.loads(pickle.dumps(task))
    assert copy.held_out() == task.held_out() and copy.family == task.family


class _Articles:
    """QA-shaped training examples: `sizes[i]` questions on article i, in file order."""

    def __init__(self, sizes):
        self.train = [
            {"id": f"a{a}-q{q}", "title": f"a{a}"} for a, n in enumerate(sizes) for q in range(n)
        ]

    def load_examples(self, split, max_samples=None):
        assert split == "train", "the evaluation split was read"
        return self.train

    def data_identity(self, split, max_samples=None):
        return {"split": split}


def test_qa_reserve_starts_at_an_article_so_no_context_is_on_both_sides():
    task = reserve(_Articles([4, 3, 5]), 6)  # articles a0 (4), a1 (3), a2 (5 questions)
    held = task.held_out()  # the last 6 would cut a1 in two: take all of a1
    assert [e["title"] for e in held] == ["a1"] * 3 + ["a2"] * 5
    assert task.load_examples("train") + held == task.train
    assert task.data_identity("train")["held_out_examples"] == 8
    assert len(reserve(_Articles([4, 3, 5]), 5).held_out()) == 5  # a2 exactly: nothing moves
    with pytest.raises(UserError, match="takes every article"):
        reserve(_Articles([6, 2]), 3).load_examples("train")


def test_screen_stage_scores_on_training_examples_only(pipeline_workspace, tmp_path):
    from asc_deploy.stages import compress
    from asc_deploy.stages.core import Context, StageStore

    raw = yaml.safe_load(run_config(pipeline_workspace, "screen").read_text())
    raw["screening"] = {"fraction": 0.5, "keep": 1, "samples": 8}
    raw["task"]["holdout"] = 8
    cfg = RunConfig.model_validate(raw)
    task = reserve(_NoEvaluation(build_task(cfg.task.model_copy(update={"holdout": 0}))), 8)
    store = StageStore(Context(tmp_path))
    base = compress.model_folder(cfg.model)
    pruned = store.run(compress.prune, cfg, "2", model=base, removed=[2], head="classification")
    result = store.run(compress.screen, cfg, "2", pruned=pruned, teacher=base, task=task)
    assert result.steps == 3 and result.samples == 8  # half of the 6-step recovery budget
    assert 0 <= result.score <= 100 and result.score * 8 / 100 == round(result.score * 8 / 100)


@pytest.mark.parametrize(
    ("screening", "key"),
    [({"fraction": 1.0}, "screening.fraction"), ({"fraction": 0}, "screening.fraction"),
     ({"keep": 0}, "screening.keep"), ({"fractoin": 0.2}, "screening.fractoin"),
     ({"samples": 64}, "set task.holdout to at least 64")],
)  # fmt: skip
def test_bad_screening_settings_name_the_key(pipeline_workspace, tmp_path, screening, key):
    raw = yaml.safe_load(run_config(pipeline_workspace, "bad").read_text())
    raw["screening"] = screening
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = cli("run", str(path))
    assert result.returncode == 2 and key in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_only_the_best_per_depth_recover_and_every_candidate_keeps_its_score(
    pipeline_workspace, tmp_path
):
    raw = yaml.safe_load(run_config(pipeline_workspace, "screened").read_text())
    raw.update(output_dir=str(tmp_path / "exports"))
    raw["screening"] = {"fraction": 0.5, "keep": 1, "samples": 8}
    raw["task"]["holdout"] = 8
    raw["comparisons"].update(strategies=["top", "bottom"], off_the_shelf=[])
    path = tmp_path / "screened.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = cli("run", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "exports/screened/report/results.json").read_text())
    compressed = [m for m in results["models"] if m["kind"] in ("asc", "strategy")]
    assert compressed and all(m["screening"] is not None for m in compressed)
    evaluated = {e["model"] for e in results["evaluations"]}
    by_depth: dict[int, set] = {}
    for m in compressed:
        if m["screening"]["continued"]:
            by_depth.setdefault(len(m["removed_layers"]), set()).add(tuple(m["removed_layers"]))
            assert m["name"] in evaluated
        else:
            assert m["name"] not in evaluated
    depths = {len(m["removed_layers"]) for m in compressed}
    assert set(by_depth) == depths and all(len(s) == 1 for s in by_depth.values())
    for m in compressed:  # the one that continued scored best at its depth
        peers = [p for p in compressed if len(p["removed_layers"]) == len(m["removed_layers"])]
        if m["screening"]["continued"]:
            assert m["screening"]["score"] == max(p["screening"]["score"] for p in peers)
    report = (tmp_path / "exports/screened/report/report.md").read_text()
    screening = report.split("### Screening")[1].split("###")[0]
    rows = [line for line in screening.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == len(compressed) + 1  # header + one per candidate
    assert sum(row.count("| yes |") for row in rows) == len(depths)
    layer_choice = report.split("### Layer-choice")[1].split("###")[0]
    assert "screened out" in layer_choice
