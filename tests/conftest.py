"""Shared fixtures: tiny random encoders built in-process, and the real offline data and weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MODELS_DIR = Path(os.environ.get("ASC_MODELS_DIR", ROOT / ".cache" / "models"))
MINILM_DIR = MODELS_DIR / "all-MiniLM-L6-v2"

# A small word-level vocabulary is enough for the tokenizer to produce real, varied ids.
_WORDS = (
    "the a an movie film is was good bad great terrible not very and but it this that of to in "
    "with for on as by at from who what when where why how which question answer context paris "
    "france capital city river london england king queen year born died war peace love hate "
    "funny boring story actor plot ending music sound best worst ever never always"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tiny_tokenizer(folder: Path) -> Path:
    """Save a BERT WordPiece tokenizer folder (loaded with from_pretrained, never vocab_file=)."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'-")
    tokens = SPECIAL + _WORDS + letters + ["##" + c for c in letters]
    vocab.write_text("\n".join(dict.fromkeys(tokens)) + "\n")  # no duplicates: ids stay dense
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


ARCHS = ("bert", "roberta", "distilbert", "mpnet", "electra")


def tiny_config(arch: str, num_layers: int = 4, num_labels: int = 2, vocab_size: int = 200):
    """A random config of each supported architecture, small enough to run in milliseconds."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, num_labels=num_labels, max_position_embeddings=128)
    if arch == "distilbert":
        return tf.DistilBertConfig(dim=32, n_layers=num_layers, n_heads=2, hidden_dim=64, **common)
    sizes = dict(
        hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=2, intermediate_size=64
    )
    if arch == "bert":
        return tf.BertConfig(**sizes, **common)
    if arch == "roberta":
        # RoBERTa positions start after padding_idx, so allow for the offset.
        return tf.RobertaConfig(
            **sizes, pad_token_id=1, **{**common, "max_position_embeddings": 130}
        )
    if arch == "mpnet":
        return tf.MPNetConfig(**sizes, pad_token_id=1, **{**common, "max_position_embeddings": 130})
    if arch == "electra":
        return tf.ElectraConfig(embedding_size=16, **sizes, **common)
    raise ValueError(arch)


def tiny_model(
    arch: str = "bert",
    head: str = "classification",
    num_layers: int = 4,
    num_labels: int = 2,
    seed: int = 0,
):
    """A tiny random model with a classification, question-answering or no head, in eval mode."""
    import torch
    from transformers import (
        AutoModel,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
    )

    torch.manual_seed(seed)
    config = tiny_config(arch, num_layers=num_layers, num_labels=num_labels)
    factory = {
        "classification": AutoModelForSequenceClassification,
        "question-answering": AutoModelForQuestionAnswering,
        "encoder": AutoModel,
    }[head]
    return factory.from_config(config).eval()


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_tokenizer_dir):
    """Factory: save a tiny model plus the tiny tokenizer as a from_pretrained folder."""
    from transformers import AutoTokenizer

    def make(
        arch: str = "bert", head: str = "classification", num_layers: int = 4, num_labels: int = 2
    ) -> Path:
        folder = tmp_path / f"{arch}-{head}-{num_layers}"
        tiny_model(arch, head, num_layers, num_labels).save_pretrained(folder)
        AutoTokenizer.from_pretrained(tiny_tokenizer_dir).save_pretrained(folder)
        return folder

    return make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared task data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Real MiniLM-L6 weights; `make models` stages them (make test does it first)."""
    if not (MINILM_DIR / "config.json").is_file():
        pytest.skip(f"MiniLM-L6 not staged at {MINILM_DIR}; run `make models`")
    return MINILM_DIR


# The one real run on tiny models that the pipeline and report tests share (session-scoped).
from pipeline_helpers import (  # noqa: E402, F401
    eval_holdout_run,
    full_run,
    pipeline_workspace,
    run_results_file,
)
