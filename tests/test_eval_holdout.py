"""task.eval_holdout: training examples nothing reads but the evaluation, where decisions move.

The reserve is checked against what each reader of the training split is really handed (by
example id and text), the decisions are read off the eval-holdout run of a real tiny pipeline
(tests/pipeline_helpers.py, `eval_holdout_run`), and a bad size stops `run` before any training.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from pipeline_helpers import cli, eval_holdout_config, with_wrong_answers

from asc_deploy.config import RunConfig
from asc_deploy.errors import UserError
from asc_deploy.records import Pick, Results, load_results
from asc_deploy.report import decision as D
from asc_deploy.report.gates import accuracy_gate, gates_config
from asc_deploy.report.recommend import recommend, within_budget
from asc_deploy.report.render import write_report
from asc_deploy.tasks.holdout import (
    Reserved,
    eval_holdout_scoring,
    eval_reserve_check,
    held_out_scoring,
    reserve,
)
from asc_deploy.tasks.presets import build_task

MINUS = "\u2212"


def _config(workspace, name="held", **task) -> RunConfig:
    raw = eval_holdout_config(workspace, name)
    raw["task"].update(task)
    return RunConfig.model_validate(raw)


def _texts(examples) -> set:
    return {e["text"] for e in examples}


# -- the reserve -----------------------------------------------------------------------------------
class _Spy:
    """Every example id and text the readers of a reserved task's training split are handed."""

    def __init__(self, monkeypatch):
        self.ids, self.texts = set(), set()
        for name in ("load_examples", "held_out"):
            monkeypatch.setattr(Reserved, name, self._recording(getattr(Reserved, name)))

    def _recording(self, method):
        def read(task, *args, **kwargs):
            rows = method(task, *args, **kwargs)
            if method.__name__ == "held_out" or args[:1] == ("train",):
                self.ids |= {e["id"] for e in rows}
                self.texts |= _texts(rows)
            return rows

        return read


def test_no_reader_of_the_training_split_is_handed_an_eval_holdout_example(
    pipeline_workspace, tmp_path, monkeypatch
):
    """Fine-tuning (recovery is the same trainer, with a teacher), profiling, calibration, the
    int8-mixed search and screening, each run for real on the tiny model: the ids and texts
    they read never meet the eval holdout's."""
    from asc_deploy.compress.finetune import finetune
    from asc_deploy.compress.profiling import profile_task
    from asc_deploy.config import ExportConfig, FinetuneConfig
    from asc_deploy.deploy.mixed_precision import training_slices
    from asc_deploy.models.loading import load_tokenizer
    from asc_deploy.stages.deploy import calibration_features

    cfg = _config(pipeline_workspace)
    task = build_task(cfg.task)
    spy = _Spy(monkeypatch)
    model, tokenizer = cfg.model, load_tokenizer(cfg.model)
    recipe = FinetuneConfig(preset="cpu-fast", max_steps=1, batch_size=8)
    finetune(model, task, recipe, tmp_path / "tuned")
    finetune(model, task, recipe, tmp_path / "recovered", teacher=model)
    profile_task(model, task, None, 8)
    calibration_features(task, tokenizer, ExportConfig(calibration_samples=1000))
    training_slices(task, tokenizer, 1000, 8)
    held_out_scoring(task, 8, "screening.samples").load_examples("eval")
    scored = eval_holdout_scoring(task).load_examples("eval")
    assert len(scored) == 24 and len(spy.ids) == 64 - 24  # everything else was read
    assert not {e["id"] for e in scored} & spy.ids
    assert not _texts(scored) & spy.texts


def test_the_reserves_sit_end_to_end_and_never_take_a_repeated_text(pipeline_workspace):
    """Rows 50-53 repeat rows 0-3: the eval reserve scans back past them (one copy would be
    trained on) to 24 scored texts, and both copies stay in training."""
    task = build_task(_config(pipeline_workspace).task)
    train = task._task.load_examples("train")
    fit, held, scored = task.load_examples("train"), task.held_out(), task.eval_held_out()
    assert fit == train[:28] + train[50:54] and held == train[56:]  # screening where it was
    assert [e["id"] for e in scored] == [str(i) for i in [*range(28, 50), 54, 55]]
    check = eval_reserve_check(task)
    assert (check.examples, check.reserved, check.withheld) == (24, 24, 0)
    assert (check.overlap_training, check.overlap_screening, check.shared_with_eval) == (0, 0, 4)
    no_eval = build_task(_config(pipeline_workspace, eval_holdout=0).task)
    assert no_eval.held_out() == held and eval_holdout_scoring(no_eval) is None
    assert no_eval.data_identity("train") != task.data_identity("train")
    assert "eval_held_out_examples" not in no_eval.data_identity("train")  # old keys kept


class _Phrases:
    """SST-2-shaped training rows: each sentence with its fragments as examples of their own,
    shuffled as GLUE ships them, and a sentence pair task built from the same words."""

    SENTENCES = [
        "a gorgeous , witty film",
        "the plot is thin but the actors are great",
        "dull and far too long",
        "an honest , moving story",
    ]
    FRAGMENTS = ["gorgeous , witty", "witty film", "the plot is thin", "the actors are great",
                 "far too long", "moving story", "great"]  # fmt: skip

    def __init__(self, pairs: bool = False):
        texts = [self.FRAGMENTS[0], *self.SENTENCES[:2], *self.FRAGMENTS[1:], *self.SENTENCES[2:]]
        self.train = [
            {"id": str(i), "text": t, "label": i % 2, **({"text_pair": "ok"} if pairs else {})}
            for i, t in enumerate(texts)
        ]

    def load_examples(self, split, max_samples=None):
        return self.train if split == "train" else self.train[:1]

    def data_identity(self, split, max_samples=None):
        return {"split": split}


def test_single_texts_reserve_whole_sentences_and_withhold_their_fragments():
    """Scored: the last whole sentences before the screening reserve (the last row); withheld:
    every fragment of them, wherever it sits; trained: the rest, fragments of other sentences
    included, since nothing scored contains them."""
    task = reserve(_Phrases(), 1, 2)
    assert _texts(task.held_out()) == {"an honest , moving story"}
    assert _texts(task.eval_held_out()) == {"dull and far too long", _Phrases.SENTENCES[1]}
    assert _texts(task.load_examples("train")) == {
        "gorgeous , witty", "a gorgeous , witty film", "witty film", "moving story"
    }  # fmt: skip
    check = eval_reserve_check(task)
    assert (check.examples, check.reserved, check.withheld, check.overlap_training) == (2, 6, 4, 0)
    with pytest.raises(UserError, match="has 3 whole texts before the task.holdout reserve"):
        reserve(_Phrases(), 1, 4).load_examples("train")


def test_sentence_pairs_are_whole_and_reserve_the_last_rows():
    task = reserve(_Phrases(pairs=True), 1, 2)
    train = task._task.load_examples("train")
    assert task.eval_held_out() == train[-3:-1] and task.load_examples("train") == train[:-3]


def test_an_eval_reserve_alone_reserves_nothing_for_screening(pipeline_workspace):
    task = build_task(_config(pipeline_workspace, holdout=0).task)
    assert len(task.load_examples("train")) == 40 and len(task.eval_held_out()) == 24
    with pytest.raises(UserError, match="set task.holdout"):
        held_out_scoring(task, 8, "screening.samples")


class _Articles:
    """QA-shaped training examples: `sizes[i]` questions on article i, in file order."""

    def __init__(self, sizes):
        self.train = [
            {"id": f"a{a}-q{q}", "title": f"a{a}", "context": f"passage {a}"}
            for a, n in enumerate(sizes)
            for q in range(n)
        ]

    def load_examples(self, split, max_samples=None):
        return self.train if split == "train" else [{"id": "d", "context": "passage 0"}]

    def data_identity(self, split, max_samples=None):
        return {"split": split}


def test_qa_reserves_each_start_at_an_article():
    task = reserve(_Articles([4, 3, 5, 2]), 2, 4)  # a0 4, a1 3, a2 5, a3 2 questions
    assert {e["title"] for e in task.held_out()} == {"a3"}
    assert {e["title"] for e in task.eval_held_out()} == {"a2"}  # 4 would split a2: all 5
    assert {e["title"] for e in task.load_examples("train")} == {"a0", "a1"}
    with pytest.raises(UserError, match="task.eval_holdout: reserving 9 .* every article"):
        reserve(_Articles([4, 3, 5, 2]), 2, 9).load_examples("train")


# -- bad input: one error line naming the key, exit 2, before any stage ---------------------------
@pytest.mark.parametrize(
    ("task", "extra", "message"),
    [
        ({"eval_holdout": 1}, {}, "key 'task.eval_holdout': Value error, a paired comparison"),
        ({"eval_holdout": 60}, {}, "task.eval_holdout: the training split has 48 whole texts "
         "before the task.holdout reserve (in no other training text, not repeated), too few to "
         "reserve 60"),
        ({"eval_holdout": 40}, {}, "task.eval_holdout: 40 reserved for evaluation and 8 for "
         "screening leave 16 training examples, fewer than the reserves; keep the reserves to "
         "half the training split at most (task.eval_holdout <= 24)"),
        ({}, {"asc": {"thresholds": [0.9], "profile_samples": 40}}, "task.eval_holdout: 24 "
         "reserved leave 32 training examples, fewer than asc.profile_samples (40) reads"),
    ],
)  # fmt: skip
def test_a_bad_eval_holdout_is_one_error_line_before_any_training(
    pipeline_workspace, tmp_path, task, extra, message
):
    raw = eval_holdout_config(pipeline_workspace, "bad")
    raw.update(output_dir=str(tmp_path / "exports"), **extra)
    raw["task"].update(task)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = cli("run", str(path))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert not (tmp_path / "exports").exists()


# -- every evaluation on the eval holdout --------------------------------------------------------
@pytest.fixture
def held(eval_holdout_run) -> Results:
    root, _ = eval_holdout_run
    return load_results(root / "report" / "results.json")


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8").read().splitlines()]


def test_every_evaluation_is_scored_on_the_eval_holdout_at_batch_1_and_compared(held):
    assert held.task.eval_holdout.model_dump() == {
        "examples": 24, "reserved": 24, "overlap_training": 0, "overlap_screening": 0,
        "shared_with_eval": 4,
    }  # fmt: skip
    reference = held.reference_evaluation().eval_holdout
    ids = [r["id"] for r in _rows(reference.predictions)]
    for ev in held.evaluations:
        run = ev.eval_holdout
        assert run.examples == 24 and ev.examples == 24  # the evaluation split beside it
        assert [r["id"] for r in _rows(run.predictions)] == ids
        c = run.comparisons["accuracy"]
        # each stored at 4 decimals: 1/24 of a point does not round exactly
        assert c.n == 24 and c.ni_low <= c.delta == pytest.approx(run.delta, abs=1e-4)
        assert run.delta == pytest.approx(run.primary - reference.primary, abs=1e-4)


# -- decisions on the eval holdout ----------------------------------------------------------------
def _without_eval_holdout(results: Results) -> Results:
    """The run as a results.json from before the setting (or a run without it) holds it."""
    doc = results.dump()
    doc["task"].pop("eval_holdout")
    for ev in doc["evaluations"]:
        ev.pop("eval_holdout")
    return Results.model_validate(doc)


def _fastest_shown(results: Results, budget: float, bound):
    """The non-inferior pick computed here from the measurements and `bound(ev)`."""
    reference = results.reference_evaluation().key
    candidates = [
        m for m in results.bench[0].measurements
        if m.shape == (1, 16) and (ev := results.evaluation(m.model, m.variant)) is not None
        and (ev.key == reference or bound(ev) >= -budget)
    ]  # fmt: skip
    best = min(candidates, key=lambda m: m.latency_ms.p50)
    return best.model, best.variant


def _holdout_bound(ev) -> float:
    return ev.eval_holdout.comparisons["accuracy"].ni_low


def test_the_recommendation_is_decided_on_the_eval_holdout(held):
    config = gates_config(held)
    for budget in (5.0, 20.0, 60.0):
        pick = recommend(held, config.model_copy(update={"accuracy_budget": budget}))["cpu"]
        assert (pick.model, pick.variant) == _fastest_shown(held, budget, _holdout_bound)


# The reference's own ONNX fp32 artifact predicts as it does everywhere (the pipeline's
# comparisons give it a bound of 0): wrong answers added to it are the only difference.
TWIN = ("uncompressed", "fp32")


def test_a_drop_on_the_evaluation_split_alone_moves_no_decision(held, tmp_path):
    worse = with_wrong_answers(held, *TWIN, 2, tmp_path)
    split_bound = worse.evaluation(*TWIN).comparison["ni_low"]
    assert split_bound < 0 and _holdout_bound(worse.evaluation(*TWIN)) == 0
    budget = -split_bound - 0.1  # what the split's bound would fail
    assert TWIN not in within_budget(_without_eval_holdout(worse), budget)
    assert TWIN in within_budget(worse, budget)


def test_a_drop_on_the_eval_holdout_fails_the_gate_there(held, tmp_path):
    worse = with_wrong_answers(held, *TWIN, 2, tmp_path, eval_holdout=True)
    bound = _holdout_bound(worse.evaluation(*TWIN))
    assert TWIN in within_budget(worse, -bound) and TWIN not in within_budget(worse, -bound - 0.1)
    assert TWIN in within_budget(_without_eval_holdout(worse), 0.0)  # the split saw no drop
    chosen = {"cpu": Pick(model=TWIN[0], variant=TWIN[1])}
    gate = accuracy_gate(worse, chosen, -bound - 0.1, "recommended")
    assert not gate.passed and gate.value == pytest.approx(-bound, abs=1e-4)  # stored rounded
    assert gate.reason.startswith("uncompressed fp32: ")
    assert gate.reason.endswith(" on the eval holdout")


def test_the_report_says_which_set_decided_and_shows_the_split_beside_it(held, tmp_path):
    analysed = write_report(held, tmp_path / "report", with_plots=False)
    md = (tmp_path / "report" / "report.md").read_text()
    lines = [line[2:] for line in md.split("### Main table")[0].splitlines() if line[:2] == "- "]
    assert lines[0] == (
        "Decided on the eval holdout: 24 training examples that nothing was trained, profiled, "
        "screened or calibrated on (task.eval_holdout); overlap, by id, text or fragment, with "
        "the training split 0 and with the screening reserve 0; 4 share a text with the "
        "evaluation split, whose 24 examples give the published-comparable numbers beside them"
    )
    power = lines[-1]
    assert power.startswith("Power (accuracy): ") and " of the 24 eval-holdout examples" in power
    assert "(the evaluation split's 24 examples alone: " in power
    main = md.split("### Main table")[1].split("###")[0]
    assert "| accuracy eval holdout | Δ eval holdout [95% CI] |" in main
    assert "where the recommendation and the gates decide" in main
    pick = analysed.recommendation["cpu"]
    if (pick.model, pick.variant) != ("uncompressed", "torch"):
        assert "; on the evaluation split (published-comparable): " in lines[1]


def test_a_results_json_without_an_eval_holdout_decides_on_the_evaluation_split(held):
    """A file written before the setting (or by a run without it) loads and decides as before:
    on the evaluation split's comparisons, the same picks as computed from them here."""
    old = _without_eval_holdout(held)
    assert not D.on_eval_holdout(old)
    config = gates_config(old)
    for budget in (5.0, 20.0, 60.0):
        pick = recommend(old, config.model_copy(update={"accuracy_budget": budget}))["cpu"]
        expected = _fastest_shown(old, budget, lambda ev: ev.comparison["ni_low"])
        assert (pick.model, pick.variant) == expected


def test_the_pareto_plot_draws_the_numbers_that_decide(held, tmp_path):
    """The frontier a reader compares the recommendation with is on the eval holdout, where the
    pick was made; without one, on the evaluation split as before."""
    from asc_deploy.report import plots

    m = held.bench[0].measurements[0]
    shape = (m.host_label, m.provider, m.batch, m.sequence)
    for results, scored in ((held, lambda ev: ev.eval_holdout.primary),
                            (_without_eval_holdout(held), lambda ev: ev.primary)):  # fmt: skip
        points = plots.latency_points(results, *shape)
        assert len(points) > 2
        for _, value, model, variant in points:
            assert value == scored(results.evaluation(model, variant))
    worse = with_wrong_answers(held, *TWIN, 2, tmp_path, eval_holdout=True)  # dev unchanged
    twin = [{p[2:]: p[1] for p in plots.latency_points(r, *shape)}[TWIN] for r in (held, worse)]
    assert twin[1] < twin[0]


def test_an_edited_eval_holdout_accuracy_is_refused_by_the_report(eval_holdout_run, tmp_path):
    doc = copy.deepcopy(eval_holdout_run[1])  # the session's copy stays as the run wrote it
    run = doc["evaluations"][1]["eval_holdout"]
    run["primary"] = run["metrics"]["accuracy"] = run["metrics"]["accuracy"] + 10
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    result = cli("report", str(path), "-o", str(tmp_path / "rep"), "--no-plots")
    assert result.returncode == 2, result.stderr
    assert "on the eval holdout" in result.stderr and "its predictions give" in result.stderr
