"""`asc-deploy narrow`: width compression from the command line, and its bad inputs."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import SHARED_DATA, tiny_model, write_tiny_tokenizer
from deploy_helpers import run_cli

SST2 = ["--task", "sst2", "--data-dir", str(SHARED_DATA / "sst2")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("narrow")
    tokenizer = AutoTokenizer.from_pretrained(write_tiny_tokenizer(root / "tok"))
    folders = {}
    for arch in ("bert", "distilbert"):
        folders[arch] = root / arch
        tiny_model(arch, num_layers=2).save_pretrained(folders[arch])
        tokenizer.save_pretrained(folders[arch])
    return folders


BAD = {
    "width not divisible by the heads": (
        ["--widths", "hidden=15"],
        "--widths.hidden: 15 is not divisible by the 2 heads kept",
    ),
    "width as wide as the model": (
        ["--widths", "hidden=32"],
        "--widths.hidden: 32 must be below the model's hidden width 32",
    ),
    "FFN wider than the model": (
        ["--widths", "ffn=128"],
        "--widths.ffn: 128 must be below the model's ffn width 64",
    ),
    "unknown width name": (["--widths", "depth=3"], "'depth=3' is not hidden=N, ffn=N or heads=N"),
    "unknown init": (
        ["--widths", "ffn=32", "--init", "magic"],
        "--init 'magic' is not one of sensitivity",
    ),
    "unknown bias variant": (["--widths", "ffn=32", "--biases", "some"], "--biases 'some'"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_widths_are_one_error_line_before_any_work(case, models, tmp_path, monkeypatch, capsys):
    flags, needle = BAD[case]
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "narrow", models["bert"], *flags, *SST2, "-o", out)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert needle in lines[0], err
    assert not out.exists()


def test_an_architecture_without_a_width_mapping_is_named(models, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    args = ["narrow", models["distilbert"], "--widths", "ffn=32", *SST2, "-o", out]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "architecture 'distilbert' has no width mapping" in err, err
    assert not out.exists()


def test_narrow_then_distil_the_narrow_folder(models, tmp_path, monkeypatch, capsys):
    """The verb's folder is a plain model of the new shape that `finetune --distill-from` the
    wide model trains, hidden states compared through the saved projection."""
    from asc_deploy.models.loading import load_config

    narrow = tmp_path / "narrow"
    args = ["narrow", models["bert"], "--widths", "hidden=16,ffn=24", *SST2, "--samples", "32"]
    code, out, err = run_cli(monkeypatch, capsys, *args, "-o", narrow, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["widths"] == {"hidden": 16, "ffn": 24, "heads": 2}
    assert record["before"] == {"hidden": 32, "ffn": 64, "heads": 2}
    config = load_config(narrow)
    assert (config.hidden_size, config.intermediate_size) == (16, 24)
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(
        yaml.safe_dump(
            {
                "model": str(models["bert"]),
                "task": {"preset": "sst2", "data_dir": str(SHARED_DATA / "sst2")},
                "finetune": {
                    "preset": "cpu-fast", "max_steps": 3, "batch_size": 8, "distillation": True,
                    "distill_hidden_weight": 1.0,
                },
            }
        )
    )  # fmt: skip
    recovered = tmp_path / "recovered"
    args = ["finetune", narrow, "--config", run_yaml, "--distill-from", models["bert"]]
    code, _, err = run_cli(
        monkeypatch, capsys, *args, "--max-train-samples", "64", "--no-eval", "-o", recovered
    )
    assert code == 0, err
    summary = json.loads((recovered / "finetune.json").read_text())
    assert summary["distill_layer_map"] == [[0, 0], [1, 1], [2, 2]]


def _run_yaml(tmp_path, model, apc: dict, **extra) -> str:
    config = {
        "name": "bad",
        "output_dir": str(tmp_path / "exports"),
        "model": str(model),
        "model_finetuned": True,
        "task": {"preset": "sst2", "data_dir": str(SHARED_DATA / "sst2")},
        "apc": apc,
        **extra,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


RUN_BAD = {
    "width not divisible by the heads": (
        {"targets": [{"ffn": 32}, {"hidden": 15}]},
        "apc.targets[1].hidden: 15 is not divisible by the 2 heads kept",
    ),
    "width as wide as the model": (
        {"hidden": 32},
        "apc.targets[0].hidden: 32 must be below the model's hidden width 32",
    ),
    "unknown init": ({"ffn": 32, "init": "magic"}, "apc.init"),
    "a target naming no width": ({"targets": [{}]}, "names at least one of hidden, ffn, heads"),
    "a depth the model does not have": (
        {"ffn": 32, "depths": [4]},
        "apc.depths: 4 removed layers leave nothing",
    ),
}


@pytest.mark.parametrize("case", RUN_BAD)
def test_run_refuses_bad_widths_before_any_stage(case, models, tmp_path, monkeypatch, capsys):
    apc, needle = RUN_BAD[case]
    code, _, err = run_cli(monkeypatch, capsys, "run", _run_yaml(tmp_path, models["bert"], apc))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert needle in lines[0], err
    assert not (tmp_path / "exports").exists()  # nothing ran, nothing written


def test_run_names_an_architecture_without_a_width_mapping(models, tmp_path, monkeypatch, capsys):
    config = _run_yaml(tmp_path, models["distilbert"], {"ffn": 32})
    code, _, err = run_cli(monkeypatch, capsys, "run", config)
    assert code == 2 and "architecture 'distilbert' has no width mapping" in err, err
    assert not (tmp_path / "exports").exists()
