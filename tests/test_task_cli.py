"""`asc-deploy finetune` / `evaluate`: the happy path; bad input is one line and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = (
    "  family: classification\n  train_file: {file}\n  eval_file: {file}\n"
    "  text_column: text\n  labels: [negative, neutral]\n"
)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASC_QUIET": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "from asc_deploy.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def assert_user_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_finetune_then_evaluate(tmp_path, tiny_model_dir, shared_data):
    model = tiny_model_dir("bert")
    out = tmp_path / "ft"
    args = [
        "finetune",
        str(model),
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "-o",
        str(out),
    ]
    args += ["--steps", "3", "--batch-size", "8", "--max-train-samples", "48", "--json"]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["finetune"]["steps"] == 3 and record["finetune"]["recipe"]["preset"] == "cpu-fast"
    assert record["evaluation"]["examples"] == 872 and not record["cached"]
    again = cli(*args, "--no-eval")
    assert again.returncode == 0 and json.loads(again.stdout)["cached"]
    assert 0 <= record["evaluation"]["metrics"]["accuracy"] <= 100
    preds = tmp_path / "preds.jsonl"
    proc = cli(
        "evaluate",
        str(out),
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "--max-samples",
        "20",
        "--predictions",
        str(preds),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["evaluation"]
    assert result["examples"] == 20 and result["runtime"] == "torch"
    assert len(preds.read_text().splitlines()) == 20 and preds.with_name("preds.cls.npy").is_file()


def test_unknown_task(tmp_path, tiny_model_dir):
    assert_user_error(
        cli("evaluate", str(tiny_model_dir("bert")), "--task", "imdb"), "unknown task preset"
    )


def test_unknown_recipe_writes_nothing(tmp_path, tiny_model_dir, shared_data):
    out = tmp_path / "ft"
    proc = cli(
        "finetune",
        str(tiny_model_dir("bert")),
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "-o",
        str(out),
        "--recipe",
        "turbo",
    )
    assert_user_error(proc, "unknown fine-tuning preset 'turbo'")
    assert not out.exists()


def test_missing_model_folder(tmp_path, shared_data):
    out = tmp_path / "ft"
    proc = cli(
        "finetune",
        str(tmp_path / "nope"),
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "-o",
        str(out),
    )
    assert_user_error(proc, "not found")
    assert not out.exists()


@pytest.mark.parametrize(
    ("task_yaml", "fragment"),
    [
        (CUSTOM.format(file="{data}") + "  label_column: stars\n", "column stars not found"),
        (CUSTOM.format(file="{data}"), "outside the declared set"),
        (CUSTOM.format(file="{empty}"), "no records"),
    ],
)
def test_bad_data_in_config(tmp_path, tiny_model_dir, task_yaml, fragment):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "good", "label": "positive"}\n')
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    config = tmp_path / "run.yaml"
    config.write_text("model: x\ntask:\n" + task_yaml.format(data=data, empty=empty))
    out = tmp_path / "ft"
    assert_user_error(
        cli("finetune", str(tiny_model_dir("bert")), "--config", str(config), "-o", str(out)),
        fragment,
    )
    assert not out.exists()


def test_qa_max_length_below_question(tmp_path, tiny_model_dir, shared_data):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: x\ntask:\n  preset: squad_v2\n  data_dir: {shared_data}\n"
        "  qa: {max_length: 8, stride: 2}\n"
    )
    proc = cli(
        "evaluate",
        str(tiny_model_dir("bert", "question-answering")),
        "--config",
        str(config),
        "--max-samples",
        "3",
    )
    assert_user_error(proc, "below the question length")
