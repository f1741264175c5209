"""Layer-selection criteria with known answers, ASC at a target depth, and the prune verb."""

import copy
import json

import numpy as np
import pytest
import torch
from conftest import tiny_model
from typer.testing import CliRunner

from asc_deploy.cli import app
from asc_deploy.compress.asc import (
    profile_similarity,
    select_redundant_layers,
    threshold_for_depth,
    threshold_sweep,
)
from asc_deploy.compress.criteria import CRITERIA, select_layers
from asc_deploy.compress.greedy import greedy_removal, training_batches
from asc_deploy.compress.strategies import random_layers
from asc_deploy.config import CRITERION_NAMES
from asc_deploy.errors import UserError
from asc_deploy.models.adapters import adapter_for
from asc_deploy.models.surgery import IdentityLayer, remove_layers

torch.set_num_threads(1)


def _matrix(pairs: dict[tuple[int, int], float], size: int, rest: float = 0.5) -> np.ndarray:
    m = np.full((size, size), rest)
    for (i, k), v in pairs.items():
        m[i, k] = m[k, i] = v
    np.fill_diagonal(m, 1.0)
    return m


def _batches(seed: int = 3, rows: int = 6, width: int = 10) -> list[dict]:
    """Two padded batches of random ids, as `tasks.base.collate` makes them (numpy int64)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(2):
        ids = torch.randint(5, 200, (rows, width), generator=g)
        mask = torch.ones_like(ids)
        mask[0, width // 2 :] = 0
        ids[0, width // 2 :] = 0
        batches.append({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    return batches


def _with_identity(model, layer_indices: list[int]):
    layers = adapter_for(model.config.model_type).layers(model)
    for i in layer_indices:
        layers[i] = IdentityLayer()
    return model


# --- registry -------------------------------------------------------------------------------


def test_registry_holds_every_criterion_and_position_ones_keep_their_answers():
    assert set(CRITERIA) == {
        "top",
        "bottom",
        "alternate",
        "middle",
        "random",
        "explicit",
        "block-influence",
        "angular-block",
        "greedy",
    }
    assert tuple(CRITERIA) == CRITERION_NAMES  # what the run config accepts, in the same order
    assert select_layers("top", 12, 3).layers == [10, 11, 12]
    assert select_layers("random", 12, 4, seed=7).layers == random_layers(12, 4, 7)
    assert select_layers("explicit", 6, layers=[3, 1]).layers == [1, 3]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: select_layers("nope", 6, 2), "choose one of top, bottom"),
        (lambda: select_layers("top", 6, 6), "out of range: remove 1..5"),
        (lambda: select_layers("top", 6, 0), "out of range"),
        (lambda: select_layers("block-influence", 6, 2), "needs the ASC similarity matrix"),
        (lambda: select_layers("greedy", 6, 2, model=object()), "needs the model and batches"),
        (lambda: select_layers("angular-block", 6, 2, similarity=np.eye(5)), "needs 7x7"),
    ],
)
def test_bad_requests_are_user_errors(call, message):
    with pytest.raises(UserError, match=message):
        call()


def test_config_accepts_every_criterion_and_names_them_for_an_unknown_one():
    from pydantic import ValidationError

    from asc_deploy.config import ASCConfig, ComparisonsConfig

    chosen = ["greedy", "block-influence", "angular-block", "middle"]
    assert ComparisonsConfig(strategies=chosen).strategies == chosen
    with pytest.raises(ValidationError, match="unknown strategy 'nope'; choose from top"):
        ComparisonsConfig(strategies=["nope"])
    with pytest.raises(ValidationError, match="at least 1 layer"):
        ASCConfig(remove_layers=[2, 0])
    assert ASCConfig(remove_layers=[2, 4]).remove_layers == [2, 4]


# --- similarity criteria --------------------------------------------------------------------


def test_block_influence_removes_an_identity_layer_first():
    model = _with_identity(tiny_model("bert", "encoder", num_layers=4), [2])  # layer 3
    m = profile_similarity(model, _batches()).matrix
    choice = select_layers("block-influence", 4, 1, similarity=m)
    assert choice.layers == [3]
    assert choice.evidence["block_influence"][3] == pytest.approx(0.0, abs=1e-6)
    # A random tiny layer changes little, but still 10x more than float noise on the identity.
    assert min(v for k, v in choice.evidence["block_influence"].items() if k != 3) > 1e-5


def test_block_influence_ranks_by_one_minus_adjacent_similarity():
    m = _matrix({(0, 1): 0.80, (1, 2): 0.97, (2, 3): 0.60, (3, 4): 0.95}, size=5)
    choice = select_layers("block-influence", 4, 2, similarity=m)
    assert choice.layers == [2, 4]
    assert choice.evidence["block_influence"] == pytest.approx({1: 0.2, 2: 0.03, 3: 0.4, 4: 0.05})


def test_angular_block_finds_a_planted_block():
    # States 1 and 4 nearly equal: layers 2..4 barely change anything as a block, although
    # each adjacent pair inside it looks no more similar than elsewhere.
    m = _matrix({(1, 4): 0.99, (0, 3): 0.9, (2, 5): 0.95}, size=7, rest=0.6)
    choice = select_layers("angular-block", 6, 3, similarity=m)
    assert choice.layers == [2, 3, 4]
    assert choice.evidence["start_state"] == 1
    distances = choice.evidence["angular_distance_by_start_state"]
    assert sorted(distances) == [0, 1, 2, 3]
    assert distances[1] == pytest.approx(np.arccos(0.99) / np.pi)
    assert select_layers("angular-block", 6, 1, similarity=m).layers[0] in range(1, 7)


def test_angular_block_finds_a_planted_identity_block_on_a_model():
    model = _with_identity(tiny_model("bert", "encoder", num_layers=5), [1, 2])  # layers 2, 3
    m = profile_similarity(model, _batches()).matrix
    choice = select_layers("angular-block", 5, 2, similarity=m)
    assert choice.layers == [2, 3]
    assert choice.evidence["angular_distance_by_start_state"][1] == pytest.approx(0.0, abs=1e-3)


# --- greedy ---------------------------------------------------------------------------------


def _kl_after_removal(model, removed_1based: list[int], batches) -> float:
    """Independent reference: physically remove the layers, mean KL of the softmax outputs."""
    pruned = remove_layers(copy.deepcopy(model), [k - 1 for k in removed_1based])
    total, rows = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            inputs = {k: torch.as_tensor(v) for k, v in batch.items()}
            p = torch.log_softmax(model(**inputs).logits.double(), -1)
            q = torch.log_softmax(pruned(**inputs).logits.double(), -1)
            total += float((p.exp() * (p - q)).sum())
            rows += p.shape[0]
    return total / rows


def test_greedy_removes_an_identity_layer_first_and_its_kl_path_is_removals_kl(capsys, monkeypatch):
    monkeypatch.delenv("ASC_QUIET", raising=False)
    model = _with_identity(tiny_model("bert", "classification", num_layers=4), [1])  # layer 2
    before = copy.deepcopy(model.state_dict())
    batches = _batches()
    choice = select_layers("greedy", 4, 2, model=model, batches=batches)
    # A CI log sees the search: 4 + 3 candidate passes for two layers.
    assert "greedy layer selection: done, 7/7 (100%)" in capsys.readouterr().err
    order, kls = choice.evidence["order"], choice.evidence["kl_path"]
    assert order[0] == 2 and kls[0] == 0.0
    assert choice.layers == sorted(order) and len(choice.evidence["steps"]) == 2
    first_candidates = {int(k): v for k, v in choice.evidence["steps"][0]["candidates"].items()}
    assert sorted(first_candidates) == [1, 2, 3, 4]
    assert min(v for k, v in first_candidates.items() if k != 2) > 0
    # Step 2 with layer 2 (the identity) gone is exactly removing one more layer alone.
    assert kls[1] == pytest.approx(min(v for k, v in first_candidates.items() if k != 2))
    # Identity replacement measured the same KL physical removal gives.
    assert kls[1] == pytest.approx(_kl_after_removal(model, choice.layers, batches), rel=1e-6)
    # The model comes back unchanged.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(adapter_for("bert").layers(model)[0], torch.nn.Module)


def test_greedy_on_question_answering_ignores_padding():
    model = _with_identity(tiny_model("bert", "question-answering", num_layers=3), [2])
    layers, path = greedy_removal(model, _batches(), 1)
    assert layers == [3] and path[0].kl == 0.0
    assert all(np.isfinite(v) for v in path[0].candidates.values())


class _TrainOnlyTask:
    """Wraps a real task; reading anything but the training split fails the test."""

    def __init__(self, task):
        self.task = task
        self.splits: list[str] = []

    def __getattr__(self, name):
        return getattr(self.task, name)

    def load_examples(self, split, max_samples=None):
        self.splits.append(split)
        if split != "train":
            raise AssertionError(f"greedy read the {split} split")
        return self.task.load_examples(split, max_samples)


@pytest.fixture
def sst2_dir(tmp_path):
    folder = tmp_path / "sst2"
    folder.mkdir()
    rows = ["the movie was good", "a terrible boring film", "great story", "not funny at all"]
    rows += ["the best ending ever", "the worst plot", "very good actor", "bad sound"]
    body = "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(rows))
    (folder / "train.tsv").write_text("text\tlabel\n" + body)
    (folder / "dev.tsv").write_text("text\tlabel\n" + "no\t0\n")
    return folder


def _train_only_task(sst2_dir):
    from asc_deploy.config import TaskConfig
    from asc_deploy.tasks.presets import build_task

    return _TrainOnlyTask(build_task(TaskConfig(preset="sst2", data_dir=sst2_dir)))


def test_training_batches_sample_only_the_training_split(sst2_dir, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    task = _train_only_task(sst2_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    batches = training_batches(task, tokenizer, samples=5, batch_size=2, seed=1)
    assert task.splits == ["train"]
    assert sum(len(b["input_ids"]) for b in batches) == 5 and len(batches) == 3
    again = training_batches(task, tokenizer, samples=5, batch_size=2, seed=1)
    assert all(
        np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, again, strict=True)
    )


# --- ASC at a target depth ------------------------------------------------------------------


def test_target_depth_finds_the_highest_threshold_for_each_count():
    m = _matrix({(0, 1): 0.95, (2, 3): 0.91}, size=5)
    one, two = threshold_for_depth(m, 1), threshold_for_depth(m, 2)
    assert (one.layers, two.layers) == ([1], [1, 3])
    assert one.threshold == pytest.approx(0.96) and two.threshold == pytest.approx(0.92)
    for choice in (one, two):
        assert select_redundant_layers(m, choice.threshold) == choice.layers
        above = float(np.nextafter(choice.threshold, 2.0))
        assert len(select_redundant_layers(m, above)) != choice.count


def test_target_depth_searches_past_a_count_that_falls_as_the_threshold_drops():
    # At t = 1 state 1 is kept and serves 2 and 3; at 0.96 state 1 goes, and with it 2's and
    # 3's reference: two layers at the top, one below.
    m = _matrix({(1, 2): 0.995, (1, 3): 0.995, (0, 1): 0.95}, size=5)
    assert threshold_for_depth(m, 2).threshold == 1.0
    assert threshold_for_depth(m, 2).layers == [2, 3]
    assert threshold_for_depth(m, 1).layers == [1]


def test_target_depth_says_when_no_threshold_gives_the_count():
    m = _matrix({(0, 1): 0.95, (0, 2): 0.95}, size=4)  # 0 layers, then 1 and 2 together
    choice = threshold_for_depth(m, 1)
    assert choice.threshold is None and choice.layers is None
    assert "exactly 1 layers" in choice.reason and "removes 0, 2, 3" in choice.reason
    assert choice.nearest == ((0, 1.0), (2, pytest.approx(0.96)))


def _float_edge_cases():
    values = np.round(np.linspace(0.10, 0.50, 40001), 6)
    # The naive threshold v + eps, after the rule's `t - eps`, rounds above v: it misses v.
    misses = next(x for x in values if (x + 0.01) - 0.01 > x)
    # Or a threshold one ulp above v + eps still admits v: the naive one is not the highest.
    low = next(x for x in values if np.nextafter(x + 0.05, 2.0) - 0.05 <= x)
    return [(float(misses), 0.01, -1), (float(low), 0.05, 1)]


@pytest.mark.parametrize("value, epsilon, side", _float_edge_cases())
def test_target_depth_lands_on_the_exact_float_edge_of_the_rule(value, epsilon, side):
    m = _matrix({(0, 2): value}, size=4, rest=0.05)
    choice = threshold_for_depth(m, 1, epsilon)
    assert choice.layers == [2]
    assert np.sign(choice.threshold - (value + epsilon)) == side
    above = float(np.nextafter(choice.threshold, 2.0))
    assert select_redundant_layers(m, above, epsilon) == []


@pytest.mark.parametrize("seed", range(6))
def test_target_depth_agrees_with_a_brute_force_threshold_scan(seed):
    rng = np.random.default_rng(seed)
    size = 7
    upper = np.triu(rng.choice(np.round(rng.uniform(0.6, 1.0, 12), 3), (size, size)), 1)
    m = upper + upper.T
    np.fill_diagonal(m, 1.0)
    grid = np.round(np.arange(1.0, 0.5, -0.0005), 4)
    counts = {t: len(select_redundant_layers(m, float(t))) for t in grid}
    for k in range(1, size - 1):
        choice = threshold_for_depth(m, k)
        if choice.threshold is None:
            assert k not in counts.values(), (k, choice.reason)
            continue
        assert len(select_redundant_layers(m, choice.threshold)) == k
        assert all(counts[t] != k for t in grid if t > choice.threshold + 1e-12)
    # The sweep lists distinct selections, highest threshold first, each reproducible.
    sweep = threshold_sweep(m)
    assert [t for t, _ in sweep] == sorted((t for t, _ in sweep), reverse=True)
    assert all(select_redundant_layers(m, t) == layers for t, layers in sweep)


def test_target_depth_refuses_a_count_the_model_cannot_lose():
    with pytest.raises(UserError, match="ask for 1..3"):
        threshold_for_depth(np.eye(5), 4)


# --- the prune verb -------------------------------------------------------------------------


def _similarity_file(tmp_path, matrix) -> str:
    path = tmp_path / "similarity.json"
    record = {
        "schema": "asc-deploy.similarity/1",
        "num_layers": len(matrix) - 1,
        "matrix": np.asarray(matrix).tolist(),
        "matrix_hash": "h",
    }
    path.write_text(json.dumps(record))
    return str(path)


def _prune(*args):
    return CliRunner().invoke(app, ["prune", *map(str, args)])


def test_prune_at_a_target_depth_records_the_implied_threshold(tiny_model_dir, tmp_path):
    sim = _similarity_file(tmp_path, _matrix({(0, 1): 0.95, (2, 3): 0.91}, size=5))
    out = tmp_path / "out"
    result = _prune(tiny_model_dir(), "--similarity", sim, "--remove-layers", 2, "-o", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "pruning.json").read_text())
    assert record["removed_layers"] == [1, 3] and record["strategy"] == "asc"
    assert record["threshold"] == pytest.approx(0.92)
    assert "threshold 0.92" in result.output


def test_prune_with_block_influence_and_greedy(tiny_model_dir, sst2_dir, tmp_path, monkeypatch):
    model = tiny_model_dir()
    sim = _similarity_file(tmp_path, _matrix({(0, 1): 0.6, (1, 2): 0.97}, size=5, rest=0.7))
    out = tmp_path / "bi"
    result = _prune(
        model, "--strategy", "block-influence", "--num-layers", 1, "--similarity", sim,
        "-o", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "pruning.json").read_text())["removed_layers"] == [2]

    import asc_deploy.cli.compress_verbs as verbs

    task = _train_only_task(sst2_dir)
    monkeypatch.setattr(verbs, "resolve_task", lambda *flags: task)
    out = tmp_path / "greedy"
    result = _prune(
        model, "--strategy", "greedy", "--num-layers", 2, "--task", "sst2",
        "--data-dir", sst2_dir, "--greedy-samples", 6, "-o", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # progress lines go to stderr
    assert task.splits == ["train"]
    assert len(printed["evidence"]["kl_path"]) == 2 and printed["seed"] == 42
    assert printed["removed_layers"] == sorted(printed["evidence"]["order"])
    assert json.loads((out / "pruning.json").read_text())["strategy"] == "greedy"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "nope", "--num-layers", "1"], "unknown layer-selection criterion 'nope'"),
        (["--strategy", "top", "--num-layers", "4"], "--num-layers 4 is out of range"),
        (["--strategy", "top", "--num-layers", "0"], "--num-layers 0 is out of range"),
        (["--strategy", "block-influence", "--num-layers", "1"], "needs --similarity"),
        (["--strategy", "angular-block", "--num-layers", "1"], "needs --similarity"),
        (["--strategy", "greedy", "--num-layers", "1"], "needs --task PRESET --data-dir"),
        (["--strategy", "greedy", "--num-layers", "4", "--task", "sst2"], "--num-layers 4"),
        (["--strategy", "top", "--num-layers", "1", "--threshold", "0.9"], "for strategy asc"),
        (["--similarity", "{sim}", "--remove-layers", "1"], "exactly 1 layers"),
        (["--similarity", "{sim}", "--remove-layers", "4"], "--remove-layers 4 is out of range"),
        (["--remove-layers", "2"], "needs --similarity"),
        (["--similarity", "{sim}", "--remove-layers", "2", "--threshold", "0.9"], "not both"),
        (["--similarity", "{sim}", "--num-layers", "2"], "use --remove-layers K"),
    ],
)
def test_prune_bad_input_is_a_user_error_before_any_loading(
    args, message, tiny_model_dir, tmp_path, monkeypatch
):
    import asc_deploy.models.loading as loading

    model = tiny_model_dir()

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr(loading, "load_model_and_tokenizer", no_loading)
    sim = _similarity_file(tmp_path, _matrix({(0, 1): 0.95, (0, 2): 0.95}, size=5))
    out = tmp_path / "out"
    result = _prune(model, *[a.format(sim=sim) for a in args], "-o", out)
    assert isinstance(result.exception, UserError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()


def test_profile_reports_target_depths_consistent_with_the_rule(tiny_model_dir, sst2_dir, tmp_path):
    out = tmp_path / "profile"
    result = CliRunner().invoke(
        app,
        ["profile", str(tiny_model_dir()), "--task", "sst2", "--data-dir", str(sst2_dir)]
        + ["--remove-layers", "1,2", "--epsilon", "0.02", "-o", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "similarity.json").read_text())
    assert record["epsilon"] == 0.02 and sorted(record["depths"]) == ["1", "2"]
    for count, depth in record["depths"].items():
        if depth["threshold"] is not None:
            assert (
                select_redundant_layers(record["matrix"], depth["threshold"], 0.02)
                == (depth["layers"])
            )
            assert len(depth["layers"]) == int(count)


def test_profile_checks_target_depths_before_profiling(tiny_model_dir, sst2_dir, tmp_path):
    args = ["profile", str(tiny_model_dir()), "--task", "sst2", "--data-dir", str(sst2_dir)]
    result = CliRunner().invoke(app, [*args, "--remove-layers", "2,4", "-o", str(tmp_path / "p")])
    assert isinstance(result.exception, UserError)
    assert "--remove-layers 4 is out of range" in str(result.exception)
    assert not (tmp_path / "p").exists()
