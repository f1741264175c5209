"""PyTorch-side evaluation: numpy-only inference loop, padding invariance, saved predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_model

from asc_deploy.config import QAConfig, TaskConfig
from asc_deploy.tasks.evaluation import (
    cls_path_for,
    evaluate_torch,
    load_predictions,
    run_inference,
    save_predictions,
)
from asc_deploy.tasks.presets import build_task


@pytest.fixture
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture
def sst2(shared_data):
    return build_task(TaskConfig(preset="sst2", data_dir=shared_data, max_eval_samples=40))


def test_run_inference_restores_order_with_a_numpy_forward(sst2, tokenizer):
    examples = sst2.load_examples("eval")
    features = sst2.encode(tokenizer, examples)
    seen_widths = []

    def forward(batch):
        # Logit 1 = number of real tokens: a prediction that depends only on its own row.
        seen_widths.append(batch["input_ids"].shape[1])
        length = batch["attention_mask"].sum(axis=1).astype(np.float32)
        return {"logits": np.stack([np.full_like(length, 20.0), length], axis=1)}

    predictions = run_inference(
        forward, sst2, examples, features, batch_size=8, pad_token_id=0, progress=False
    )
    assert [p["id"] for p in predictions] == [e["id"] for e in examples]
    expected = [int(len(f["input_ids"]) > 20) for f in features]
    assert [p["prediction"] for p in predictions] == expected
    assert seen_widths == sorted(seen_widths, reverse=True)  # longest first: little padding


def test_batch_size_does_not_change_predictions(sst2, tokenizer):
    model = tiny_model("bert", "classification")
    one = evaluate_torch(model, tokenizer, sst2, batch_size=1, progress=False)
    many = evaluate_torch(model, tokenizer, sst2, batch_size=16, progress=False)
    assert [p["prediction"] for p in one.predictions] == [p["prediction"] for p in many.predictions]
    np.testing.assert_allclose(
        [p["probabilities"] for p in one.predictions],
        [p["probabilities"] for p in many.predictions],
        atol=1e-5,
    )
    np.testing.assert_allclose(one.cls_vectors, many.cls_vectors, atol=1e-5)
    assert one.cls_vectors.shape == (40, 32)
    assert one.metrics == pytest.approx(many.metrics)
    assert set(one.metrics) == {"accuracy", "f1", "macro_f1", "mcc"}


def test_save_predictions_jsonl_and_cls(tmp_path, sst2, tokenizer):
    result = evaluate_torch(tiny_model("bert", "classification"), tokenizer, sst2, progress=False)
    path = save_predictions(
        tmp_path / "out" / "predictions.jsonl", result.predictions, result.cls_vectors
    )
    loaded = load_predictions(path)
    assert loaded == json.loads(json.dumps(result.predictions))
    assert set(loaded[0]) >= {"id", "prediction", "gold", "probabilities"}
    assert cls_path_for(path).name == "predictions.cls.npy"
    np.testing.assert_array_equal(np.load(cls_path_for(path)), result.cls_vectors)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "predictions.cls.npy",
        "predictions.jsonl",
    ]


def test_qa_evaluation_end_to_end(shared_data, tokenizer):
    task = build_task(
        TaskConfig(
            preset="squad_v2",
            data_dir=shared_data,
            max_eval_samples=6,
            qa=QAConfig(max_length=96, stride=32),
        )
    )
    model = tiny_model("bert", "question-answering")
    result = evaluate_torch(model, tokenizer, task, batch_size=4, progress=False)
    assert len(result.predictions) == 6 and result.cls_vectors.shape == (6, 32)
    assert {"exact", "f1", "HasAns_f1", "NoAns_f1"} <= set(result.metrics)
    assert result.info["features"] > 6  # contexts overflow into several windows
    record = result.predictions[0]
    assert {"id", "prediction", "gold", "best_span", "null_score_diff", "n_best"} <= set(record)
