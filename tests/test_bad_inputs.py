"""Bad inputs a new user tries (issue 13): one `error:` line, exit 2, nothing lost or left behind.

Each case runs the real `asc-deploy` entry point in-process on a tiny random model.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import tiny_model, write_tiny_tokenizer
from deploy_helpers import classification_features

from asc_deploy.cli import main


@dataclass
class Tiny:
    model: Path  # from_pretrained folder, 2 labels, 4 layers
    fp32: Path  # its exported artifact (task sst2)
    int8: Path  # the int8-dynamic variant of fp32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    from transformers import AutoTokenizer

    from asc_deploy.deploy.export import export_artifact
    from asc_deploy.deploy.quantize import quantize_artifact

    root = tmp_path_factory.mktemp("bad_inputs")
    model = root / "model"
    tiny_model("bert").save_pretrained(model)
    AutoTokenizer.from_pretrained(write_tiny_tokenizer(root / "tok")).save_pretrained(model)
    fp32 = root / "exports" / "tiny" / "fp32"
    features = classification_features(model)
    export_artifact(model, fp32, "classification", features, name="tiny", task_name="sst2")
    int8 = fp32.parent / "int8-dynamic"
    quantize_artifact(fp32, int8, "dynamic", isa="avx2")
    return Tiny(model, fp32, int8)


def run_cli(monkeypatch, capsys, *args: str | Path) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["asc-deploy", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], err


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    return folder


# ---- data loss: -o never deletes what it does not own ------------------------------------------

VERBS_WITH_OUTPUT = {
    "export": lambda t: ["export", t.model, "--task", "sst2", "--validate-samples", "4"],
    "quantize": lambda t: ["quantize", t.fp32, "--mode", "dynamic", "--isa", "avx2"],
    "optimize": lambda t: ["optimize", t.fp32],
    "prune": lambda t: ["prune", t.model, "--layers", "2"],
    "triton": lambda t: ["triton", t.fp32],
}


@pytest.mark.parametrize("verb", VERBS_WITH_OUTPUT)
def test_output_folder_with_user_files_is_refused(verb, tiny, tmp_path, monkeypatch, capsys):
    folder = _user_folder(tmp_path)
    args = VERBS_WITH_OUTPUT[verb](tiny)
    code, _, err = run_cli(monkeypatch, capsys, *args, "-o", folder)
    assert_one_error_line(code, err, "--overwrite", str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "my notes"


@pytest.mark.parametrize("verb", VERBS_WITH_OUTPUT)
def test_output_that_is_an_existing_file_is_refused(verb, tiny, tmp_path, monkeypatch, capsys):
    target = tmp_path / "result.txt"
    target.write_text("keep me")
    code, _, err = run_cli(monkeypatch, capsys, *VERBS_WITH_OUTPUT[verb](tiny), "-o", target)
    assert_one_error_line(code, err, "existing file")
    assert target.read_text() == "keep me"
    assert hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(lambda t: ["prune", t.model, "--layers", "2", "-o", t.model], id="prune-same"),
        pytest.param(
            lambda t: ["quantize", t.fp32, "-o", t.fp32 / "int8", "--isa", "avx2"],
            id="quantize-inside",
        ),
        pytest.param(lambda t: ["optimize", t.fp32, "-o", t.fp32.parent], id="optimize-contains"),
        pytest.param(
            lambda t: ["export", t.model, "--task", "sst2", "-o", t.model], id="export-same"
        ),
        pytest.param(lambda t: ["triton", t.fp32, "-o", t.fp32], id="triton-same"),
    ],
)
def test_output_overlapping_an_input_is_refused_even_with_overwrite(
    args, tiny, monkeypatch, capsys
):
    from asc_deploy.fsutil import hash_folder

    before = hash_folder(tiny.model), hash_folder(tiny.fp32)
    code, _, err = run_cli(monkeypatch, capsys, *args(tiny), "--overwrite")
    assert_one_error_line(code, err, "the input")
    assert (hash_folder(tiny.model), hash_folder(tiny.fp32)) == before
    assert not (tiny.fp32 / "int8").exists()


def test_overwrite_replaces_a_folder_the_user_names(tiny, tmp_path, monkeypatch, capsys):
    folder = _user_folder(tmp_path)
    args = VERBS_WITH_OUTPUT["quantize"](tiny)
    code, _, err = run_cli(monkeypatch, capsys, *args, "-o", folder, "--overwrite")
    assert code == 0, err
    assert not (folder / "notes.txt").exists()
    assert json.loads((folder / "manifest.json").read_text())["variant"] == "int8-dynamic"


def test_previous_output_of_the_same_verb_is_replaced(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "pruned"
    for layers, kept in (("2", [1, 3, 4]), ("1,3", [2, 4])):
        code, _, err = run_cli(
            monkeypatch, capsys, "prune", tiny.model, "--layers", layers, "-o", out
        )
        assert code == 0, err
        assert json.loads((out / "pruning.json").read_text())["kept_layers"] == kept
    # ...but a prune output is not "a previous output" of quantize.
    code, _, err = run_cli(monkeypatch, capsys, *VERBS_WITH_OUTPUT["quantize"](tiny), "-o", out)
    assert_one_error_line(code, err, "--overwrite")
    assert (out / "pruning.json").is_file()


def test_triton_adds_its_model_and_keeps_the_others(tiny, tmp_path, monkeypatch, capsys):
    repo = tmp_path / "model_repository"
    other = repo / "other-model"
    (other / "1").mkdir(parents=True)
    (other / "config.pbtxt").write_text('name: "other-model"\n')
    (other / "1" / "model.onnx").write_bytes(b"another team's model")
    for _ in range(2):  # the second run replaces only its own folder
        code, _, err = run_cli(monkeypatch, capsys, "triton", f"mine={tiny.fp32}", "-o", repo)
        assert code == 0, err
    assert sorted(p.name for p in repo.iterdir()) == ["mine", "other-model"]
    assert (other / "1" / "model.onnx").read_bytes() == b"another team's model"
    assert (repo / "mine" / "1" / "model.onnx").read_bytes() == (
        tiny.fp32 / "model.onnx"
    ).read_bytes()
    assert hidden_leftovers(repo) == []


@pytest.mark.parametrize("where", ["parent-is-file", "read-only-mount"])
@pytest.mark.parametrize("verb", ["export", "quantize", "prune"])
def test_unwritable_output_fails_before_any_work(where, verb, tiny, tmp_path, monkeypatch, capsys):
    if where == "parent-is-file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
    else:
        # /sys refuses new entries even to root, for whom a chmod'ed folder is still writable.
        out = Path("/sys/asc-deploy-test-output/out")
    first_work = {
        "export": "asc_deploy.deploy.export.model_summary",
        "quantize": "asc_deploy.deploy.quantize.resolve_isa",
        "prune": "asc_deploy.models.loading.load_config",
    }[verb]
    monkeypatch.setattr(first_work, _work_started)
    code, _, err = run_cli(monkeypatch, capsys, *VERBS_WITH_OUTPUT[verb](tiny), "-o", out)
    assert_one_error_line(code, err, "cannot write")


def _work_started(*args, **kwargs):
    raise AssertionError("the verb started work before checking its output folder")
