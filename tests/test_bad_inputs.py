"""Bad inputs a new user tries (issue 13): one `error:` line, exit 2, nothing lost or left behind.

Each case runs the real `asc-deploy` entry point in-process on a tiny random model.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SHARED_DATA, tiny_model, write_tiny_tokenizer
from deploy_helpers import classification_features, run_cli


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


# ---- one `error:` line for every other bad input -----------------------------------------------


@dataclass
class Bad:
    no_tokenizer: Path  # config + weights, no tokenizer files
    pickled: Path  # a pytorch_model.bin whose pickle calls a function
    latin1: Path  # an sst2 data folder whose TSVs are Latin-1, not UTF-8
    similarity: Path  # similarity.json of `tiny.model`
    other_similarity: Path  # ... of another model with the same layer count
    empty_bench: Path  # a bench.json whose run holds no measurements


@pytest.fixture(scope="module")
def bad(tiny, tmp_path_factory) -> Bad:
    import os

    import torch
    from transformers import AutoTokenizer

    from asc_deploy.compress.profiling import profile_task, similarity_record, write_similarity
    from asc_deploy.config import TaskConfig
    from asc_deploy.measure.harness import SCHEMA
    from asc_deploy.tasks.presets import build_task

    root = tmp_path_factory.mktemp("bad")
    no_tokenizer = root / "no_tokenizer"
    tiny_model("bert").save_pretrained(no_tokenizer)
    pickled = root / "pickled"
    tiny_model("bert").config.save_pretrained(pickled)

    class CallsAFunction:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"weight": CallsAFunction()}, pickled / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(tiny.model).save_pretrained(pickled)
    latin1 = root / "latin1"
    latin1.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (latin1 / name).write_bytes("sentence\tlabel\ncaf\xe9 cr\xe8me\t1\n".encode("latin-1"))

    task = build_task(TaskConfig(preset="sst2", data_dir=SHARED_DATA, max_train_samples=8))
    similarities = []
    other = root / "other"
    tiny_model("bert", seed=1).save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny.model).save_pretrained(other)
    for source in (tiny.model, other):
        result, identity = profile_task(source, task, 8, 4)
        out = root / f"similarity-{source.name}"
        write_similarity(out, similarity_record(result, identity), {})
        similarities.append(out / "similarity.json")
    empty_bench = root / "empty-bench.json"
    empty_bench.write_text(json.dumps({"schema": SCHEMA, "host": {"fingerprint": "x"}}))
    return Bad(no_tokenizer, pickled, latin1, *similarities, empty_bench)


def _args(template: list[str], tiny: Tiny, bad: Bad, tmp_path: Path) -> list[str]:
    values = {**vars(tiny), **vars(bad), "out": tmp_path / "out", "tmp": tmp_path}
    values["data"] = SHARED_DATA
    return [a.format(**values) for a in template]


SST2 = ("--task", "sst2", "--data-dir", "{data}")
ONE_LINE_ERRORS = {
    # silently wrong results
    "2-label artifact on a 3-label task": (
        ["evaluate", "{fp32}", "--task", "mnli", "--data-dir", "{data}", "--max-samples", "8"],
        ["predicts 2 labels", "mnli has 3", "(sst2)"],
    ),
    "provider whose session would fall back (Azure)": (
        ["bench", "{fp32}", "-p", "AzureExecutionProvider", "-o", "{tmp}/b.json"],
        ["AzureExecutionProvider"],
    ),
    "similarity.json of another model": (
        ["prune", "{model}", "--similarity", "{other_similarity}", "-o", "{out}"],
        ["profiled on a different model", "asc-deploy profile"],
    ),
    # tracebacks before
    "export --opset 99": (["export", "{model}", *SST2, "--opset", "99"], ["--opset 99", "14..20"]),
    "export --opset 7": (["export", "{model}", *SST2, "--opset", "7"], ["--opset 7"]),
    "non-UTF-8 TSV": (
        ["evaluate", "{model}", "--task", "sst2", "--data-dir", "{latin1}"],
        ["not UTF-8", "0xe9"],
    ),
    "bench -o an existing folder": (["bench", "{fp32}", "-o", "{tmp}"], ["is a folder"]),
    "bench --torch an ONNX artifact": (
        ["bench", "{fp32}", "--torch", "{int8}", "-o", "{tmp}/b.json"],
        ["is an ONNX artifact"],
    ),
    "prune a model folder without tokenizer": (
        ["prune", "{no_tokenizer}", "--layers", "1", "-o", "{out}"],
        ["tokenizer"],
    ),
    "export a model folder without tokenizer": (
        ["export", "{no_tokenizer}", *SST2, "-o", "{out}"],
        ["tokenizer"],
    ),
    "evaluate a model folder without tokenizer": (
        ["evaluate", "{no_tokenizer}", *SST2, "--max-samples", "4"],
        ["tokenizer"],
    ),
    # weak messages before
    "--epsilon -5": (
        ["prune", "{model}", "--similarity", "{similarity}", "--epsilon", "-5", "-o", "{out}"],
        ["--epsilon -5"],
    ),
    "--epsilon 5": (
        ["prune", "{model}", "--similarity", "{similarity}", "--epsilon", "5", "-o", "{out}"],
        ["--epsilon 5"],
    ),
    "--strategy explicit without layers": (
        ["prune", "{model}", "--strategy", "explicit", "-o", "{out}"],
        ["explicit", "--layers"],
    ),
    "--layers empty": (["prune", "{model}", "--layers", ",", "-o", "{out}"], ["--layers"]),
    "re-quantize an int8 artifact": (
        ["quantize", "{int8}", "--isa", "avx2", "-o", "{out}"],
        ["needs an fp32 artifact", "int8-dynamic"],
    ),
    "fp16 of an int8 artifact": (
        ["quantize", "{int8}", "--mode", "fp16", "-o", "{out}"],
        ["needs an fp32 artifact"],
    ),
    "optimize an int8 artifact": (
        ["optimize", "{int8}", "-o", "{out}"],
        ["needs an fp32 artifact"],
    ),
    "provider typo cpuu (quantize)": (
        ["quantize", "{fp32}", "--mode", "fp16", "--provider", "cpuu", "-o", "{out}"],
        ["unknown execution provider 'cpuu'"],
    ),
    "provider typo cpuu (bench)": (
        ["bench", "{fp32}", "-p", "cpuu", "-o", "{tmp}/b.json"],
        ["unknown execution provider 'cpuu'"],
    ),
    "a pickle .bin that calls a function": (  # allowed pickles still never run code
        ["--allow-pickle", "prune", "{pickled}", "--layers", "1", "-o", "{out}"],
        ["not a plain weights file", "safetensors"],
    ),
    "--distill-from with a typo": (
        ["finetune", "{model}", *SST2, "--distill-from", "tacher", "-o", "{out}"],
        ["'tacher' is not a local folder", "hub model id"],
    ),
    "bench-merge a run without measurements": (
        ["bench-merge", "{empty_bench}", "-o", "{tmp}/merged.json"],
        ["without measurements"],
    ),
}


@pytest.mark.parametrize("case", ONE_LINE_ERRORS)
def test_bad_input_is_one_error_line(case, tiny, bad, tmp_path, monkeypatch, capsys):
    template, needles = ONE_LINE_ERRORS[case]
    code, _, err = run_cli(monkeypatch, capsys, *_args(template, tiny, bad, tmp_path))
    assert_one_error_line(code, err, *needles)
    assert "from_tf" not in err and "install onnxruntime-gpu" not in err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("*.json"))


USAGE_ERRORS = {
    "evaluate --max-samples -5": ["evaluate", "{model}", *SST2, "--max-samples", "-5"],
    "evaluate --max-samples 0": ["evaluate", "{model}", *SST2, "--max-samples", "0"],
    "profile --max-samples 0": ["profile", "{model}", *SST2, "--max-samples", "0", "-o", "{out}"],
    "profile --batch-size 0": ["profile", "{model}", *SST2, "--batch-size", "0", "-o", "{out}"],
}


@pytest.mark.parametrize("case", USAGE_ERRORS)
def test_out_of_range_count_is_a_usage_error(case, tiny, bad, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, *_args(USAGE_ERRORS[case], tiny, bad, tmp_path))
    option = case.split()[1]
    assert code == 2, err
    assert f"Invalid value for '{option}'" in err and "Traceback" not in err + out
    assert not (tmp_path / "out").exists()


def test_similarity_of_the_same_model_is_accepted(tiny, bad, tmp_path, monkeypatch, capsys):
    args = ["prune", tiny.model, "--similarity", bad.similarity, "--strategy", "block-influence"]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--num-layers", "1", "-o", tmp_path / "o")
    assert code == 0, err


def test_artifact_of_another_task_with_as_many_labels_warns(tiny, monkeypatch, capsys):
    from asc_deploy.deploy.ort_evaluate import TaskMismatchWarning

    args = [
        "evaluate",
        tiny.fp32,
        "--task",
        "mrpc",
        "--data-dir",
        SHARED_DATA,
        "--max-samples",
        "4",
    ]
    with pytest.warns(TaskMismatchWarning, match="exported for task sst2, evaluated here on mrpc"):
        code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err


def test_successful_export_prints_no_exporter_noise(tiny, tmp_path):
    """A fresh process: the exporters' loggers bind stderr at import, out of pytest's reach."""
    import subprocess

    args = ["export", tiny.model, "--task", "sst2", "--validate-samples", "4", "-o", tmp_path / "a"]
    result = subprocess.run(
        [sys.executable, "-c", "from asc_deploy.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for noise in ("recommended minimum opset", "requires accelerate", "torch_dtype"):
        assert noise not in result.stdout + result.stderr
    assert "exported" in result.stdout


def test_flops_of_a_static_int8_graph_match_its_fp32_parent(tiny, tmp_path):
    """QDQ weights reach their MatMul through DequantizeLinear: still counted (was ~0)."""
    from asc_deploy.deploy.quantize import quantize_artifact
    from asc_deploy.measure.flops import graph_stats

    static = tmp_path / "int8-static"
    features = classification_features(tiny.model)
    quantize_artifact(
        tiny.fp32,
        static,
        "static",
        isa="avx2",
        calibration_features=features,
        calibration_samples=8,
    )
    fp32, qdq = graph_stats(tiny.fp32 / "model.onnx"), graph_stats(static / "model.onnx")
    # 4 layers x (Q, K, V, output, two FFN) products of 32-wide rows: 2 * (4*32*32 + 2*32*64)
    assert fp32.per_token_flops == 4 * 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert (qdq.per_token_flops, qdq.per_example_flops) == (
        fp32.per_token_flops,
        fp32.per_example_flops,
    )
    assert (qdq.attention_products, qdq.hidden_size) == (fp32.attention_products, 32)
