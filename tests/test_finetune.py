"""The trainer: recipes, batching, learning, determinism, the cache and distillation wiring."""

from __future__ import annotations

import json

import pytest
import torch

from asc_deploy.compress.finetune import (
    RECIPES,
    distillation_loss,
    finetune,
    pad_to_width,
    plan_batches,
    resolve_recipe,
    total_steps,
)
from asc_deploy.config import FinetuneConfig, QAConfig, TaskConfig
from asc_deploy.errors import UserError
from asc_deploy.tasks.presets import build_task

POSITIVE = ["good", "great", "best", "love", "funny"]
NEGATIVE = ["bad", "terrible", "worst", "hate", "boring"]


@pytest.fixture
def toy_task(tmp_path):
    """A separable sentiment task: the label is which word list the sentence draws from."""
    rows = []
    for i in range(64):
        words = POSITIVE if i % 2 else NEGATIVE
        length = 2 + i % 7
        rows.append(
            {
                "text": "the movie " + " ".join(words[(i + k) % 5] for k in range(length)),
                "label": i % 2,
            }
        )
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TaskConfig(
        family="classification",
        train_file=str(path),
        eval_file=str(path),
        text_column="text",
        labels=["negative", "positive"],
        max_length=32,
    )
    return build_task(cfg)


def _recipe(**kw):
    values = dict(
        preset="cpu-fast", max_steps=12, batch_size=8, learning_rate=5e-3, warmup_ratio=0.0
    )
    values.update(kw)
    return FinetuneConfig(**values)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_recipes_resolve_with_overrides():
    nli = resolve_recipe(FinetuneConfig(preset="paper-nli"))
    assert (nli.epochs, nli.batch_size, nli.learning_rate, nli.optimizer, nli.scheduler) == (
        5,
        32,
        1e-5,
        "adam",
        "none",
    )
    qa = resolve_recipe(FinetuneConfig(preset="paper-qa"))
    assert (qa.learning_rate, qa.optimizer, qa.warmup_ratio, qa.grad_clip, qa.scheduler) == (
        3e-5,
        "adamw",
        0.1,
        1.0,
        "linear",
    )
    assert resolve_recipe(FinetuneConfig(preset="paper-paraphrase")).epochs == 10
    fast = resolve_recipe(FinetuneConfig(preset="cpu-fast", learning_rate=3e-5))
    assert (
        fast.learning_rate == 3e-5
        and fast.dynamic_padding
        and fast.group_by_length
        and fast.max_steps
    )
    assert total_steps(nli, 100) == 16  # 5 epochs of ceil(100/32)... as ceil(5 * 100 / 32)
    assert set(RECIPES) == {"paper-nli", "paper-paraphrase", "paper-qa", "cpu-fast"}
    # A config is refused when it is read; CLI overrides (model_copy, unvalidated) at resolution.
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        FinetuneConfig(preset="fast")
    with pytest.raises(ValueError, match="batch_size"):
        FinetuneConfig(preset="cpu-fast", batch_size=0)
    base = FinetuneConfig(preset="cpu-fast")
    with pytest.raises(UserError, match="known presets"):
        resolve_recipe(base.model_copy(update={"preset": "fast"}))
    with pytest.raises(UserError, match="batch_size"):
        resolve_recipe(base.model_copy(update={"batch_size": 0}))


def test_length_grouping_cuts_padding_and_covers_every_example():
    lengths = [3 + (i * 37) % 60 for i in range(320)]
    plain = resolve_recipe(
        FinetuneConfig(preset="cpu-fast", batch_size=8, group_by_length=False, seed=1)
    )
    grouped = resolve_recipe(
        FinetuneConfig(preset="cpu-fast", batch_size=8, group_by_length=True, seed=1)
    )

    def padded_tokens(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    for recipe in (plain, grouped):
        epoch = plan_batches(lengths, recipe, steps=40)
        assert sorted(i for b in epoch for i in b) == list(range(320))
    assert padded_tokens(plan_batches(lengths, grouped, 40)) < 0.7 * padded_tokens(
        plan_batches(lengths, plain, 40)
    )
    assert plan_batches(lengths, grouped, 40) == plan_batches(lengths, grouped, 40)  # seeded


def test_pad_to_width():
    import numpy as np

    batch = {
        "input_ids": np.ones((2, 3), dtype=np.int64),
        "attention_mask": np.ones((2, 3), dtype=np.int64),
    }
    out = pad_to_width(batch, 5, pad_token_id=7)
    assert (
        out["input_ids"].tolist() == [[1, 1, 1, 7, 7]] * 2
        and out["attention_mask"][:, 3:].sum() == 0
    )


def test_loss_falls_and_run_is_recorded(tmp_path, toy_task, tiny_model_dir):
    out = finetune(
        tiny_model_dir("bert"), toy_task, _recipe(max_steps=40), tmp_path / "ft", progress=False
    )
    record = json.loads((out / "finetune.json").read_text())
    assert record["steps"] == 40 and record["final_loss"] < 0.5 * record["first_loss"]
    assert record["recipe"]["learning_rate"] == 5e-3 and record["data"]["examples"] == 64
    assert record["examples_per_s"] > 0 and (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()


def test_same_seed_same_weights_and_cache_is_a_noop(tmp_path, toy_task, tiny_model_dir):
    source = tiny_model_dir("bert")
    a = finetune(source, toy_task, _recipe(), tmp_path / "a", progress=False)
    b = finetune(source, toy_task, _recipe(), tmp_path / "b", progress=False)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    stamp = (a / "finetune.json").stat().st_mtime_ns
    assert finetune(source, toy_task, _recipe(), a, progress=False) == a
    assert (a / "finetune.json").stat().st_mtime_ns == stamp  # cached: nothing rewritten
    finetune(source, toy_task, _recipe(seed=7), a, progress=False)  # another recipe retrains
    assert (a / "finetune.json").stat().st_mtime_ns != stamp
    assert not all(torch.equal(wa[k], _weights(a)[k]) for k in wa)


def test_distillation_loss_properties():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    assert distillation_loss(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.tensor([[2.0, 0.0, 0.5], [1.0, 1.0, 0.0]])
    p = torch.softmax(other / 2, -1)
    kl = (p * (p.log() - torch.log_softmax(logits / 2, -1))).sum(-1).mean() * 4
    assert distillation_loss(logits, other, 2.0).item() == pytest.approx(kl.item(), rel=1e-5)
    # Masked (padding) positions do not count.
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    changed = other.clone()
    changed[:, 2] = 50.0
    assert distillation_loss(logits, other, 2.0, mask).item() == pytest.approx(
        distillation_loss(logits, changed, 2.0, mask).item()
    )


def test_distillation_changes_training_and_is_recorded(tmp_path, toy_task, tiny_model_dir):
    source = tiny_model_dir("bert")
    teacher = finetune(source, toy_task, _recipe(), tmp_path / "teacher", progress=False)
    plain = finetune(source, toy_task, _recipe(), tmp_path / "plain", progress=False)
    distilled = finetune(
        source,
        toy_task,
        _recipe(distill_alpha=0.7, distill_temperature=3.0),
        tmp_path / "kd",
        teacher=teacher,
        progress=False,
    )
    record = json.loads((distilled / "finetune.json").read_text())
    assert record["recipe"]["distillation"] and record["teacher"] == str(teacher)
    assert record["recipe"]["distill_alpha"] == 0.7
    wp, wd = _weights(plain), _weights(distilled)
    assert not all(torch.equal(wp[k], wd[k]) for k in wp)
    with pytest.raises(UserError, match="no teacher"):
        finetune(source, toy_task, _recipe(distillation=True), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_qa_finetune_with_distillation_runs(tmp_path, shared_data, tiny_model_dir):
    from asc_deploy.config import ArticleSplit

    task = build_task(
        TaskConfig(
            preset="squad_v2",
            data_dir=shared_data,
            article_split=ArticleSplit(),
            max_train_samples=24,
            qa=QAConfig(max_length=96, stride=32, max_query_length=24),
        )
    )
    source = tiny_model_dir("bert", "question-answering")
    teacher = finetune(source, task, _recipe(max_steps=3), tmp_path / "t", progress=False)
    out = finetune(
        source, task, _recipe(max_steps=3), tmp_path / "s", teacher=teacher, progress=False
    )
    record = json.loads((out / "finetune.json").read_text())
    assert record["steps"] == 3 and record["recipe"]["distillation"]
    assert record["data"]["encoding"]["qa"]["max_length"] == 96


def test_cache_key_holds_the_data_content_not_where_the_run_started(tmp_path, tiny_model_dir):
    from asc_deploy.compress.finetune import _cache_key

    folder = tmp_path / "data" / "sst2"
    folder.mkdir(parents=True)
    rows = "text\tlabel\n" + "".join(f"the movie {i} was good\t{i % 2}\n" for i in range(8))
    (folder / "train.tsv").write_text(rows)
    (folder / "dev.tsv").write_text(rows)
    shallow, deep = tmp_path / "run", tmp_path / "run" / "a" / "b"
    deep.mkdir(parents=True)
    source, recipe = tiny_model_dir("bert"), resolve_recipe(_recipe())

    def key_from(root):
        task = build_task(TaskConfig(preset="sst2", data_dir=tmp_path / "data"), project_root=root)
        return _cache_key(source, task, task.load_examples("train"), recipe, None), task.data_note

    (key_a, identity), note_a = key_from(shallow)
    (key_b, _), note_b = key_from(deep)
    assert note_a != note_b  # the note shows the data relative to the working folder...
    assert key_a == key_b  # ...but the same files are the same run
    assert identity["data_note"] == note_a  # and the note is still recorded
    (folder / "train.tsv").write_text(rows.replace("good\t0", "good\t1"))
    assert key_from(shallow)[0][0] != key_a  # other content, another key
