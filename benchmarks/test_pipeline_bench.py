"""pytest-benchmark suite for the pipeline's hot paths: ASC profiling, export, quantisation.

    .venv/bin/pytest benchmarks/test_pipeline_bench.py --benchmark-storage=benchmarks/baselines \
        --benchmark-autosave                  # record a baseline
    .venv/bin/pytest benchmarks/test_pipeline_bench.py --benchmark-storage=benchmarks/baselines \
        --benchmark-compare --benchmark-compare-fail=median:25%   # fail on regression

A small random BERT (4 layers, hidden 128) keeps each case at a second or two, so a regression
in our own code (not in the model's arithmetic) is what moves the medians.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from deploy_helpers import SENTENCES  # noqa: E402

ROUNDS = 3
RUN_IDS = itertools.count()  # each round writes a fresh folder: reuse would skip the work


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    import torch
    from conftest import write_tiny_tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    folder = write_tiny_tokenizer(tmp_path_factory.mktemp("bench-model"))
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        vocab_size=200,
        max_position_embeddings=128,
    )
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def features(small_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(small_model_dir)
    return [dict(tokenizer(s)) for s in SENTENCES * 8]


@pytest.fixture(scope="module")
def fp32_artifact(small_model_dir, features, tmp_path_factory):
    from asc_deploy.deploy.export import export_artifact

    dest = tmp_path_factory.mktemp("bench-artifacts") / "fp32"
    export_artifact(small_model_dir, dest, "classification", features[:16], features)
    return dest


def test_bench_profiling_pass(benchmark, small_model_dir, features):
    import torch

    from asc_deploy.compress.asc import profile_similarity
    from asc_deploy.compress.profiling import length_sorted_batches
    from asc_deploy.models.loading import load_model_and_tokenizer

    torch.set_num_threads(1)
    model, tokenizer = load_model_and_tokenizer(small_model_dir, "encoder")
    batches = list(length_sorted_batches(features, 16, tokenizer.pad_token_id))
    profile = benchmark.pedantic(profile_similarity, args=(model, batches), rounds=ROUNDS * 3)
    assert profile.examples == len(features)


def test_bench_export_and_validation(benchmark, small_model_dir, features, tmp_path):
    from asc_deploy.deploy.export import export_artifact

    def export():
        dest = tmp_path / f"fp32-{next(RUN_IDS)}"
        return export_artifact(small_model_dir, dest, "classification", features[:16], features)

    manifest = benchmark.pedantic(export, rounds=ROUNDS)
    assert manifest["validation"]["passed"]


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_bench_quantisation(benchmark, fp32_artifact, features, tmp_path, mode):
    from asc_deploy.deploy.quantize import quantize_artifact

    def quantize():
        dest = tmp_path / f"{mode}-{next(RUN_IDS)}"
        return quantize_artifact(
            fp32_artifact, dest, mode, calibration_features=features, calibration_samples=32
        )

    manifest = benchmark.pedantic(quantize, rounds=ROUNDS)
    assert manifest["variant"] == f"int8-{mode}"
