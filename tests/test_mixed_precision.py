"""int8-mixed: the layers whose int8 costs accuracy stay fp32, judged on training data only.

The model is a tiny BERT with one planted, badly quantisable layer: its FFN input has a channel
that is always exactly 0 (LayerNorm gain and bias 0) and a weight column of 1000 on that channel.
fp32 never sees the huge column, but int8 scales every output column by it, so all the layer's
other FFN weights round to 0 and the FFN output collapses.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import onnx
import pytest
from conftest import _WORDS, tiny_config
from deploy_helpers import run_cli

from asc_deploy.deploy.export import export_artifact
from asc_deploy.deploy.mixed_precision import (
    node_group,
    output_divergence,
    quantizable_groups,
    quantize_mixed_artifact,
    training_slices,
)
from asc_deploy.deploy.optimize import optimize_artifact
from asc_deploy.deploy.quantize import quantize_dynamic_graph
from asc_deploy.errors import UserError
from asc_deploy.measure.ort_runner import create_session
from asc_deploy.tasks.classification import ClassificationTask
from asc_deploy.tasks.evaluation import infer_features

PLANTED = 2
CALIBRATION, HELDOUT, BUDGET = 32, 200, 2.0


class TrainOnlyTask(ClassificationTask):
    """A classification task whose evaluation split fails loudly if anything reads it."""

    def __init__(self, train: list[dict]):
        super().__init__("planted", {"train": None, "eval": None}, "text", ["neg", "pos"])
        self._train = train

    def _load(self, split):
        if split != "train":
            raise AssertionError(f"the {split} split was read")
        self._cache["train"] = self._train

    def data_identity(self, split, max_samples=None):  # in memory: no files to name
        return {"task": self.name, "split": split, "rows": len(self._train)}


def _planted_model():
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = tiny_config("bert", num_layers=4)
    config.initializer_range = 0.1  # inputs move the [CLS] vector enough to separate classes
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        layer = model.bert.encoder.layer[PLANTED]
        layer.attention.output.LayerNorm.weight[0] = 0
        layer.attention.output.LayerNorm.bias[0] = 0
        layer.intermediate.dense.weight.mul_(10)  # make the FFN matter in fp32
        layer.intermediate.dense.weight[:, 0] = 1000  # ... and crush its int8 scales
        layer.output.dense.weight.mul_(10)
    return model


def _labelled_texts(model, tokenizer, count: int) -> list[dict]:
    """Random sentences labelled by the fp32 model itself (so fp32 scores 100), clear cases only:
    the classifier is rescaled and centred so that the classes balance and margins are wide."""
    import torch

    rng = random.Random(0)
    texts = [" ".join(rng.choices(_WORDS, k=rng.randint(3, 14))) for _ in range(3 * count)]
    with torch.no_grad():
        head = model.classifier
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        margin = (logits[:, 1] - logits[:, 0]) - (head.bias[1] - head.bias[0])
        scale = 0.3 / margin.std()
        head.weight.mul_(scale)
        head.bias.copy_(torch.tensor([0.0, -float((scale * margin).median())]))
        margin = scale * margin + head.bias[1]
    clear = sorted(np.argsort(-margin.abs().numpy())[:count])
    return [{"id": str(i), "text": texts[i], "label": int(margin[i] > 0)} for i in map(int, clear)]


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_tokenizer_dir):
    """(fp32 artifact folder, task, tokenizer) of the planted model."""
    from deploy_helpers import features_for
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("planted")
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = _planted_model()
    train = _labelled_texts(model, tokenizer, CALIBRATION + HELDOUT + 20)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    features = features_for(root / "model", "classification")
    export_artifact(root / "model", root / "fp32", "classification", features)
    return root / "fp32", TrainOnlyTask(train), tokenizer


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _float_matmuls(path) -> set[str]:
    return {n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMul"}


def _heldout_accuracy(model_path, heldout) -> float:
    from asc_deploy.deploy.ort_evaluate import onnx_forward

    # The search's own batching (64): dynamic int8 predictions depend on their batch-mates, so
    # another batch size may flip a row on some ISAs (it did at 16 on an AMD EPYC).
    outputs = infer_features(onnx_forward(create_session(model_path)), heldout.features, 64, 0)
    predictions = [int(np.argmax(o["logits"])) for o in outputs]
    return 100 * float(
        np.mean([p == e["label"] for p, e in zip(predictions, heldout.examples, strict=True)])
    )


def test_training_slices_are_disjoint_and_never_touch_the_eval_split(planted):
    _, task, tokenizer = planted
    with pytest.raises(AssertionError, match="eval split was read"):
        task.load_examples("eval")  # the guard the other tests rely on is live
    calibration, heldout = training_slices(task, tokenizer, CALIBRATION, HELDOUT)
    train_ids = [e["id"] for e in task.load_examples("train")]
    assert len(calibration) == CALIBRATION and len(heldout.examples) == HELDOUT
    assert [e["id"] for e in heldout.examples] == train_ids[CALIBRATION : CALIBRATION + HELDOUT]
    assert heldout.source == {"split": "train", "start": CALIBRATION, "stop": 232}
    with pytest.raises(UserError, match="all used for calibration"):
        training_slices(task, tokenizer, len(train_ids), 10)


def test_a_reserved_task_scores_the_search_on_its_reserve_only(planted):
    from asc_deploy.tasks.holdout import reserve

    _, task, tokenizer = planted
    train_ids = [e["id"] for e in task.load_examples("train")]
    reserved = reserve(task, HELDOUT)
    calibration, heldout = training_slices(reserved, tokenizer, CALIBRATION, HELDOUT)
    assert [e["id"] for e in heldout.examples] == train_ids[-HELDOUT:]  # never trained on
    assert heldout.source == {"split": "holdout", "start": 0, "stop": HELDOUT}
    assert len(calibration) == CALIBRATION  # calibration stays on the trained rows
    assert {e["id"] for e in reserved.load_examples("train")}.isdisjoint(train_ids[-HELDOUT:])


def test_planted_sensitive_layer_stays_fp32_and_the_rest_is_int8(planted):
    fp32, task, tokenizer = planted
    calibration, heldout = training_slices(task, tokenizer, CALIBRATION, HELDOUT)
    dest = fp32.parent / "int8-mixed"
    q = quantize_mixed_artifact(
        fp32,
        dest,
        calibration,
        heldout,
        BUDGET,
        isa="avx512_vnni",
        calibration_samples=CALIBRATION,
    )
    t = q["transform"]
    ranking = t["sensitivity"]
    assert ranking[0]["group"] == f"layer.{PLANTED}"
    # The gap depends on the int8 kernels of the host's ISA: over 100x on an Intel Xeon with AMX,
    # 14.7x on an AMD EPYC with AVX-512 VNNI; either way the planted layer stands far apart.
    assert ranking[0]["kl"] > 10 * ranking[1]["kl"]
    assert t["fp32_groups"] == [f"layer.{PLANTED}"]
    planted_nodes = set(t["fp32_nodes"])
    assert len(planted_nodes) == 6 and {node_group(n) for n in planted_nodes} == {"layer.2"}
    # The planted layer's weight MatMuls are still float MatMuls; every other layer's are int8.
    assert planted_nodes <= _float_matmuls(dest / "model.onnx")
    ops = _ops(dest / "model.onnx")
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulInteger"] == 3 * 6 + 2  # + pooler, classifier
    # 6 weight MatMuls per layer, 3 embedding tables, the pooler's and classifier's Gemm
    assert t["quantizable_nodes"] == 4 * 6 + 3 + 2
    assert t["fp32_node_share"] == pytest.approx(6 / 29)
    # Search path: everything int8 breaks the budget, the planted layer in fp32 meets it.
    first, last = t["search"][0], t["search"][-1]
    assert first["fp32_node_share"] == 0 and first["drop_points"] > 5 * BUDGET
    assert last["drop_points"] <= BUDGET and len(t["search"]) == 2
    assert t["heldout"]["fp32"] == 100.0 and t["heldout"]["split"] == "train"
    # The artifact on disk really scores what the search recorded, on the same held-out slice.
    assert _heldout_accuracy(dest / "model.onnx", heldout) == pytest.approx(t["heldout_score"])
    assert q["variant"] == "int8-mixed" and q["validation"]["passed"]
    assert q["settings"]["per_channel"] is True and q["settings"]["budget_points"] == BUDGET
    assert q["size_bytes"] < artifacts_size(fp32)
    again = quantize_mixed_artifact(
        fp32, dest, calibration, heldout, BUDGET, isa="avx512_vnni", calibration_samples=CALIBRATION
    )
    assert again["reused"] and again["transform"] == t


def artifacts_size(folder) -> int:
    from asc_deploy.manifest import read_manifest

    return read_manifest(folder)["size_bytes"]


def test_static_mixed_keeps_the_planted_layer_out_of_qdq(planted):
    fp32, task, tokenizer = planted
    calibration, heldout = training_slices(task, tokenizer, CALIBRATION, HELDOUT)
    dest = fp32.parent / "int8-mixed-static"
    q = quantize_mixed_artifact(
        fp32,
        dest,
        calibration,
        heldout,
        BUDGET,
        base="static",
        isa="avx2",
        calibration_samples=CALIBRATION,
    )
    t = q["transform"]
    assert t["sensitivity"][0]["group"] == f"layer.{PLANTED}"
    assert f"layer.{PLANTED}" in t["fp32_groups"] and t["drop_points"] <= BUDGET
    assert t["calibrator"] == "minmax" and q["settings"]["format"] == "QDQ"
    graph = onnx.load(str(dest / "model.onnx")).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for node in graph.node:
        if node.name in t["fp32_nodes"]:  # no int8 input feeds a node kept in fp32
            assert not set(node.input) & dequantized, node.name
    assert _ops(dest / "model.onnx")["DequantizeLinear"] > 0


def test_bad_requests_fail_before_anything_is_written(planted):
    fp32, task, tokenizer = planted
    calibration, heldout = training_slices(task, tokenizer, 4, 4)
    dest = fp32.parent / "never"
    cases = [
        ({"budget": 0.0}, "budget 0.0 must be a positive"),
        ({"budget": -1.0}, "must be a positive"),
        ({"budget": float("nan")}, "must be a positive"),
        ({"base": "fp16"}, "fp16 has its own variant"),
        ({"calibrator": "minmaxx"}, "unknown calibrator 'minmaxx'"),
    ]
    for kwargs, message in cases:
        args = {"budget": BUDGET, **kwargs}
        with pytest.raises(UserError, match=message):
            quantize_mixed_artifact(fp32, dest, calibration, heldout, **args)
    optimize_artifact(fp32, fp32.parent / "optimized")
    with pytest.raises(UserError, match="needs the fp32 artifact"):
        quantize_mixed_artifact(fp32.parent / "optimized", dest, calibration, heldout, BUDGET)
    assert not dest.exists()


def test_excluding_a_group_keeps_each_of_its_nodes_fp32(planted, tmp_path):
    """The names the search excludes are the ones ORT matches, the rewritten Gemms included."""
    fp32, _, _ = planted
    groups = quantizable_groups(fp32 / "model.onnx", "dynamic")
    assert groups["head"] == ["/bert/pooler/dense/Gemm_MatMul", "/classifier/Gemm_MatMul"]
    assert len(groups["embeddings"]) == 3 and len(groups["layer.0"]) == 6
    for group in ("head", "embeddings", "layer.0"):
        out = tmp_path / f"{group}.onnx"
        quantize_dynamic_graph(fp32 / "model.onnx", out, "avx2", nodes_to_exclude=groups[group])
        graph = onnx.load(str(out)).graph
        int8_nodes = {n.name for n in graph.node if n.op_type in ("MatMulInteger", "Gather")}
        quantized = {n.name.removesuffix("_quant") for n in graph.node if "_quant" in n.name}
        assert not set(groups[group]) & quantized, group
        others = [n for g, names in groups.items() if g != group for n in names]
        assert set(others) <= quantized | int8_nodes, group


def test_output_divergence_is_kl_of_the_softmax_over_real_tokens():
    ref = [{"logits": np.log(np.array([[0.5, 0.5]]))}]
    got = [{"logits": np.log(np.array([[0.9, 0.1]]))}]
    expected = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)
    assert output_divergence(ref, got, [np.ones((1, 3))]) == pytest.approx(expected)
    # Per-token outputs: a padded position's logit, however different, does not count.
    mask = np.array([[1, 1, 0]])
    start_ref = [{"start_logits": np.array([[1.0, 2.0, 0.0]])}]
    start_got = [{"start_logits": np.array([[1.0, 2.0, 50.0]])}]
    assert output_divergence(start_ref, start_got, [mask]) == pytest.approx(0.0)
    assert output_divergence(start_ref, start_ref, [np.ones((1, 3))]) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("/bert/encoder/layer.11/output/dense/MatMul", "layer.11"),
        ("/mpnet/encoder/layer.3/attention/attn/q/MatMul", "layer.3"),
        ("/distilbert/transformer/layer.0/ffn/lin1/MatMul", "layer.0"),
        ("/bert/embeddings/word_embeddings/Gather", "embeddings"),
        ("/classifier/MatMul", "head"),
    ],
)
def test_nodes_are_grouped_by_encoder_layer(name, group):
    assert node_group(name) == group


def test_mpnet_groups_its_shared_relative_position_table_with_the_embeddings(
    tiny_model_dir, tmp_path
):
    """MPNet (the issue's model) names layers like BERT but adds one shared bias table."""
    from deploy_helpers import export_tiny

    _, fp32, _ = export_tiny(tiny_model_dir, tmp_path, arch="mpnet", layers=2)
    groups = quantizable_groups(fp32 / "model.onnx", "dynamic")
    assert set(groups) == {"embeddings", "layer.0", "layer.1", "head"}
    assert "/mpnet/encoder/relative_attention_bias/Gather" in groups["embeddings"]
    assert groups["head"] == ["/classifier/dense/Gemm_MatMul", "/classifier/out_proj/Gemm_MatMul"]
    assert all(len(groups[f"layer.{i}"]) == 6 for i in range(2))
    static = quantizable_groups(fp32 / "model.onnx", "static")
    assert "head" not in static  # static QDQ leaves Gemm alone
    assert len(static["layer.0"]) > 6  # ... but quantises the attention score MatMuls too


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--mode", "mixed", "--budget", "0"), "budget 0.0 must be a positive"),
        (("--mode", "mixed", "--mixed-base", "fp16"), "fp16 has its own variant"),
        (("--mode", "mixed", "--calibrator", "minmaxx"), "unknown calibrator 'minmaxx'"),
        (("--mode", "static", "--calibrator", "entropyy"), "unknown calibrator 'entropyy'"),
    ],
)
def test_cli_refuses_bad_mixed_requests_in_one_line(planted, monkeypatch, capsys, args, message):
    fp32, _, _ = planted
    out_dir = fp32.parent / "cli-never"
    code, _, err = run_cli(monkeypatch, capsys, "quantize", str(fp32), "-o", str(out_dir), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out_dir.exists()


def test_cli_builds_int8_mixed_from_task_training_data(
    tiny_model_dir, tmp_path, shared_data, monkeypatch, capsys
):
    from deploy_helpers import export_tiny

    _, fp32, _ = export_tiny(tiny_model_dir, tmp_path, layers=2)
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "quantize",
        str(fp32),
        "--mode",
        "mixed",
        "--budget",
        "100",
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "--calibration-samples",
        "8",
        "--mixed-samples",
        "24",
        "--per-tensor",
        "--isa",
        "avx2",
        "--json",
    )
    assert code == 0, err
    manifest = json.loads(out)
    assert manifest["variant"] == "int8-mixed" and manifest["settings"]["per_channel"] is False
    assert manifest["transform"]["heldout"]["start"] == 8
    assert manifest["transform"]["heldout"]["stop"] == 32
    assert (fp32.parent / "int8-mixed" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("int8_budget: 0", "export.int8_budget': Input should be greater than 0"),
        ("int8_budget: -0.5", "export.int8_budget': Input should be greater than 0"),
        ("int8_budget: .nan", "export.int8_budget': Input should be a finite number"),
        ("mixed_mode: fp16", "export.mixed_mode': Input should be 'dynamic' or 'static'"),
        ("calibration_method: minmaxx", "export.calibration_method': Input should be 'minmax'"),
        ("mixed_samples: 0", "export.mixed_samples': Input should be greater than or equal"),
        ("variants: [int8-mixed]", "export.mixed_samples .* set task.holdout to at least 512"),
    ],
)
def test_run_config_refuses_bad_int8_settings(tmp_path, setting, message):
    from asc_deploy.config import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text(f"model: m\ntask:\n  preset: sst2\nexport:\n  {setting}\n")
    with pytest.raises(UserError, match=message):
        load_run_config(path)


def test_run_config_accepts_an_int8_mixed_request(tmp_path):
    from asc_deploy.config import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text(
        "model: m\ntask:\n  preset: mrpc\n  holdout: 300\nexport:\n  variants: [fp32, int8-mixed]\n"
        "  int8_budget: 0.5\n  mixed_samples: 300\n  mixed_mode: static\n  per_channel: false\n"
    )
    export = load_run_config(path).export
    assert export.variants == ["fp32", "int8-mixed"] and export.int8_budget == 0.5
    assert (export.mixed_samples, export.mixed_mode, export.per_channel) == (300, "static", False)


def test_tradeoff_curve_keeps_the_k_most_sensitive_groups_fp32(planted, tmp_path):
    """benchmarks/int8_tradeoff.py: one artifact per k, each validated, the run's ranking obeyed."""
    import importlib.util
    from pathlib import Path

    fp32, task, tokenizer = planted
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "int8_tradeoff.py"
    spec = importlib.util.spec_from_file_location("int8_tradeoff", script)
    tradeoff = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tradeoff)
    calibration, heldout = training_slices(task, tokenizer, CALIBRATION, HELDOUT)
    mixed = fp32.parent / "int8-mixed"
    t = quantize_mixed_artifact(
        fp32, mixed, calibration, heldout, BUDGET, isa="avx2", calibration_samples=CALIBRATION
    )["transform"]
    rows = tradeoff.build_artifacts(fp32, mixed, tmp_path, [0, 2], "avx2")
    mixed_row = rows.pop(2)  # the search's own artifact, as the run exported it
    assert mixed_row["artifact"] == str(mixed) and mixed_row["fp32_groups"] == t["fp32_groups"]
    assert mixed_row["label"] == f"int8-mixed (search: {len(t['fp32_groups'])} fp32)"
    labels = [r["label"] for r in rows]
    ranking = [r["group"] for r in t["sensitivity"]]
    assert labels[:3] == ["fp32", "int8 per-tensor", "int8 per-channel"]
    assert labels[3] == f"int8 per-channel, fp32: {ranking[0]}, {ranking[1]}"
    groups = quantizable_groups(fp32 / "model.onnx", "dynamic")
    share = (len(groups[ranking[0]]) + len(groups[ranking[1]])) / 29
    assert [r["share"] for r in rows] == [1.0, 0.0, 0.0, pytest.approx(share)]
    kept = {n for g in ranking[:2] for n in groups[g] if "MatMul" in n}
    two = Path(rows[3]["artifact"]) / "model.onnx"
    assert kept <= _float_matmuls(two)  # the two most sensitive groups' MatMuls stay float
    assert not kept <= _float_matmuls(Path(rows[2]["artifact"]) / "model.onnx")
    per_tensor = json.loads((tmp_path / "per-tensor" / "manifest.json").read_text())
    assert per_tensor["settings"]["per_channel"] is False
    for row in rows[1:]:
        manifest = json.loads(Path(row["artifact"], "manifest.json").read_text())
        assert manifest["validation"]["passed"]


def test_tradeoff_builds_the_search_artifact_a_run_did_not_export(planted, tmp_path):
    """The default run exports no int8-mixed: the script builds it as the pipeline would, from
    the config's export settings, scored on the task's reserve."""
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    from asc_deploy.config import ExportConfig
    from asc_deploy.tasks.holdout import reserve

    fp32, task, _ = planted
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "int8_tradeoff.py"
    spec = importlib.util.spec_from_file_location("int8_tradeoff", script)
    tradeoff = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tradeoff)
    export = ExportConfig(
        variants=["fp32", "int8-mixed"], isa="avx2", int8_budget=BUDGET,
        calibration_samples=CALIBRATION, mixed_samples=HELDOUT,
    )  # fmt: skip
    mixed = tradeoff.build_mixed(fp32, tmp_path / "int8-mixed", SimpleNamespace(export=export),
                                 reserve(task, HELDOUT))  # fmt: skip
    manifest = json.loads((mixed / "manifest.json").read_text())
    assert manifest["variant"] == "int8-mixed" and manifest["validation"]["passed"]
    transform = manifest["transform"]
    assert transform["heldout"]["split"] == "holdout"  # never trained on
    assert f"layer.{PLANTED}" in transform["fp32_groups"]
