"""Classification tasks: offline presets, label mapping, encoding, metrics, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from asc_deploy.config import TaskConfig
from asc_deploy.errors import UserError
from asc_deploy.tasks.metrics import classification_metrics
from asc_deploy.tasks.presets import build_task, known_presets


def _task(shared_data, preset, **kw):
    return build_task(TaskConfig(preset=preset, data_dir=shared_data, **kw))


@pytest.mark.parametrize(
    ("preset", "n_eval", "pairs", "labels"),
    [
        ("sst2", 872, False, 2),
        ("mrpc", 408, True, 2),
        ("rte", 277, True, 2),
        ("mnli", 9815, True, 3),
    ],
)
def test_presets_read_offline_files(shared_data, preset, n_eval, pairs, labels):
    task = _task(shared_data, preset)
    examples = task.load_examples("eval")
    assert len(examples) == n_eval
    assert ("text_pair" in examples[0]) == pairs
    assert len(task.label_names) == labels
    assert {e["label"] for e in examples} == set(range(labels))
    assert task.family == "classification" and task.primary_metric == "accuracy"


def test_label_meanings(shared_data):
    sst2 = _task(shared_data, "sst2").load_examples("eval", max_samples=1)[0]
    assert sst2["text"].startswith("it 's a charming") and sst2["label"] == 1  # positive
    mnli = _task(shared_data, "mnli")
    first = mnli.load_examples("eval", max_samples=1)[0]
    assert mnli.label_names[first["label"]] == "neutral"
    mrpc = _task(shared_data, "mrpc").load_examples("train", max_samples=2)
    assert [e["label"] for e in mrpc] == [1, 0]


def test_max_samples_from_config_and_argument(shared_data):
    task = _task(shared_data, "sst2", max_eval_samples=10)
    assert len(task.load_examples("eval")) == 10
    assert len(task.load_examples("eval", max_samples=3)) == 3


def test_mnli_has_no_offline_train_split(shared_data):
    task = _task(shared_data, "mnli")
    assert "no MNLI train split" in task.data_note
    with pytest.raises(UserError, match="no MNLI train split"):
        task.load_examples("train")


def test_unknown_preset_lists_known_ones():
    with pytest.raises(
        UserError, match="known presets: mnli, mrpc, qqp, rte, snli, squad, squad_v2, sst2"
    ):
        build_task(TaskConfig(preset="imdb"))
    assert "squad_v2" in known_presets()


def test_preset_without_data_dir_uses_the_hub(tmp_path):
    task = build_task(TaskConfig(preset="sst2"))
    assert task.source("eval").identity() == {
        "dataset": "glue",
        "config": "sst2",
        "split": "validation",
    }
    assert "hub dataset glue/sst2" in task.data_note


def _custom(tmp_path, rows, **kw):
    path = tmp_path / "train.csv"
    path.write_text("sentence,sentiment\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    cfg = dict(
        family="classification", train_file=str(path), eval_file=str(path), text_column="sentence"
    )
    cfg.update(label_column="sentiment", labels=["neg", "pos"])
    cfg.update(kw)
    return build_task(TaskConfig(**cfg))


def test_custom_dataset_maps_label_names_and_indices(tmp_path):
    task = _custom(tmp_path, [("good film", "pos"), ("bad film", "neg"), ("fine", "1")])
    assert [e["label"] for e in task.load_examples("eval")] == [1, 0, 1]


@pytest.mark.parametrize(
    ("rows", "kw", "message"),
    [
        ([("good", "great")], {}, "outside the declared set"),
        ([("good", "2")], {}, "outside the declared set"),
        ([("good", "pos")], {"label_column": "stars"}, "column stars not found"),
        ([("good", "pos")], {"labels": None}, "needs task.labels"),
        ([], {}, "no records"),
    ],
)
def test_custom_dataset_bad_input(tmp_path, rows, kw, message):
    task = _custom(tmp_path, rows, **kw) if "labels" not in kw else None
    with pytest.raises(UserError, match=message):
        (task or _custom(tmp_path, rows, **kw)).load_examples("train")


def test_encode_pairs_and_truncation(shared_data, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    task = _task(shared_data, "mrpc", max_length=16)
    examples = task.load_examples("eval", max_samples=4)
    features = task.encode(tokenizer, examples, for_training=True)
    assert len(features) == 4
    for i, f in enumerate(features):
        assert len(f["input_ids"]) == 16  # MRPC sentences are longer than 16 tokens
        assert f["example_index"] == i and f["labels"] == examples[i]["label"]
        assert set(f["token_type_ids"]) == {0, 1}  # both sentences present


def test_predictions_and_metrics_from_logits(shared_data):
    task = _task(shared_data, "sst2")
    examples = [{"id": str(i), "text": "x", "label": lab} for i, lab in enumerate([1, 0, 1, 1])]
    features = [{"input_ids": [1], "example_index": i} for i in range(4)]
    logits = [[0.0, 2.0], [1.0, 0.0], [3.0, 0.0], [0.0, 0.5]]
    predictions = task.predictions_from_outputs(
        examples, features, [{"logits": np.array(x)} for x in logits]
    )
    assert [p["prediction"] for p in predictions] == [1, 0, 0, 1]
    assert predictions[0]["probabilities"] == pytest.approx(
        [1 / (1 + np.exp(2)), 1 / (1 + np.exp(-2))]
    )
    metrics = task.compute_metrics(examples, predictions)
    assert metrics["accuracy"] == 75.0
    assert metrics["f1"] == pytest.approx(80.0)  # precision 1, recall 2/3


def test_classification_metrics_values():
    m = classification_metrics([0, 1, 2, 2], [0, 2, 2, 2], num_labels=3)
    assert m["accuracy"] == 75.0 and "f1" not in m
    # per-class F1: 1, 0, 0.8 -> macro 0.6
    assert m["macro_f1"] == pytest.approx(60.0)
    perfect = classification_metrics([0, 1, 1], [0, 1, 1], num_labels=2)
    assert perfect["mcc"] == pytest.approx(100.0) and perfect["f1"] == 100.0
