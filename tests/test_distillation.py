"""Hidden-state and attention distillation: the layer map, the losses' known values, recovery."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import tiny_model
from pydantic import ValidationError

from asc_deploy.compress.distillation import attention_loss, hidden_state_loss, layer_pairs
from asc_deploy.compress.finetune import finetune, resolve_recipe
from asc_deploy.compress.pruning import prune_model
from asc_deploy.config import FinetuneConfig, TaskConfig
from asc_deploy.errors import UserError
from asc_deploy.tasks.presets import build_task

IDS = torch.tensor([[2, 10, 11, 12, 13, 3], [2, 14, 15, 3, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


def _outputs(model):
    with torch.no_grad():
        return model(
            input_ids=IDS, attention_mask=MASK, output_hidden_states=True, output_attentions=True
        )


def _identity(layers: int):
    return [(j, j) for j in range(layers + 1)]


@pytest.fixture
def toy_task(tmp_path):
    words = (["good", "great", "best", "love"], ["bad", "terrible", "worst", "hate"])
    rows = [
        {
            "text": "the movie " + " ".join(words[i % 2][(i + k) % 4] for k in range(2 + i % 5)),
            "label": i % 2,
        }
        for i in range(48)
    ]
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return build_task(
        TaskConfig(
            family="classification",
            train_file=str(path),
            eval_file=str(path),
            text_column="text",
            labels=["negative", "positive"],
            max_length=32,
        )
    )


# -- the layer map --------------------------------------------------------------------------------
def test_layer_map_of_a_pruned_model(tmp_path, tiny_model_dir):
    source = tiny_model_dir("bert", num_layers=4)
    pruned = tmp_path / "pruned"
    prune_model(source, [1, 3], pruned, strategy="explicit")
    assert layer_pairs(pruned, 2, 4) == [(0, 0), (1, 2), (2, 4)]
    # Pruning the pruned model again: its layer 1 was original layer 2, so layer 4 remains.
    again = tmp_path / "again"
    prune_model(pruned, [1], again, strategy="explicit")
    assert layer_pairs(again, 1, 4) == [(0, 0), (1, 4)]
    with pytest.raises(UserError, match="pruned from a 4-layer model"):
        layer_pairs(pruned, 2, 6)
    assert layer_pairs(source, 4, 4) == _identity(4)
    with pytest.raises(UserError, match="no pruning.json"):
        layer_pairs(source, 4, 6)


# -- known values ---------------------------------------------------------------------------------
def test_hidden_loss_hand_worked_values_ignore_padding():
    # Two real tokens (orthogonal, then equal) and one padded token that differs wildly.
    student = (torch.tensor([[[1.0, 0.0], [3.0, 4.0], [9.0, -9.0]]]),)
    teacher = (torch.tensor([[[0.0, 1.0], [3.0, 4.0], [-5.0, 7.0]]]),)
    mask = torch.tensor([[1, 1, 0]])
    # cosine: (1 - 0) and (1 - 1) over two tokens; mse: ((1 + 1) / 2) and 0 over two tokens.
    assert hidden_state_loss(student, teacher, [(0, 0)], mask, "cosine").item() == pytest.approx(
        0.5
    )
    assert hidden_state_loss(student, teacher, [(0, 0)], mask, "mse").item() == pytest.approx(0.5)


def test_attention_loss_hand_worked_value():
    # One head; two real tokens of three; the third row and column are padding.
    student = torch.tensor([[[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.3, 0.3, 0.4]]]])
    teacher = torch.tensor([[[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]])
    mask = torch.tensor([[1, 1, 0]])
    # Over the 2x2 real block: squared errors 0.25, 0.25, 0, 0 -> mean 0.125.
    value = attention_loss((student,), (teacher,), [(0, 0), (1, 1)], mask)
    assert value.item() == pytest.approx(0.125)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_losses_are_zero_for_a_copy_and_positive_when_perturbed(arch):
    teacher = tiny_model(arch)
    student = copy.deepcopy(teacher)
    t_out, s_out = _outputs(teacher), _outputs(student)
    pairs = _identity(4)
    for kind in ("cosine", "mse"):
        same = hidden_state_loss(s_out.hidden_states, t_out.hidden_states, pairs, MASK, kind)
        assert same.item() == pytest.approx(0.0, abs=1e-6)
    assert attention_loss(s_out.attentions, t_out.attentions, pairs, MASK).item() == (
        pytest.approx(0.0, abs=1e-9)
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    p_out = _outputs(student)
    for kind in ("cosine", "mse"):
        assert hidden_state_loss(p_out.hidden_states, t_out.hidden_states, pairs, MASK, kind) > 0
    assert attention_loss(p_out.attentions, t_out.attentions, pairs, MASK) > 0


# -- the recipe -----------------------------------------------------------------------------------
def test_recipe_fields_are_validated():
    with pytest.raises(ValidationError):
        FinetuneConfig(distill_hidden_weight=-1)
    with pytest.raises(ValidationError):
        FinetuneConfig(distill_attention_weight=-0.5)
    with pytest.raises(ValidationError):
        FinetuneConfig(distill_hidden_loss="l1")
    with pytest.raises(ValidationError):
        FinetuneConfig(distill_alpha=1.5)
    with pytest.raises(ValidationError, match="set distillation: true"):
        FinetuneConfig(distill_hidden_weight=1.0)  # no teacher would be given to the run
    # CLI overrides use model_copy, which skips pydantic: the resolved recipe is checked again.
    bad = FinetuneConfig().model_copy(update={"distill_hidden_weight": -1.0})
    with pytest.raises(UserError, match="distill_hidden_weight"):
        resolve_recipe(bad)
    r = resolve_recipe(
        FinetuneConfig(distillation=True, distill_hidden_weight=2.0, distill_hidden_loss="mse")
    )
    assert (r.distill_hidden_weight, r.distill_hidden_loss, r.distill_attention_weight) == (
        2.0,
        "mse",
        0.0,
    )


def _hidden_recipe(**kw):
    values = dict(
        preset="cpu-fast",
        max_steps=25,
        batch_size=8,
        learning_rate=5e-3,
        warmup_ratio=0.0,
        distillation=True,
        distill_alpha=0.0,
        distill_hidden_weight=1.0,
        distill_hidden_loss="mse",
    )
    return FinetuneConfig(**{**values, **kw})


def _measured_hidden_loss(student_dir, teacher_dir, pairs, task):
    from asc_deploy.models.loading import load_model_and_tokenizer
    from asc_deploy.tasks.base import collate

    student, tokenizer = load_model_and_tokenizer(student_dir)
    teacher, _ = load_model_and_tokenizer(teacher_dir)
    features = task.encode(tokenizer, task.load_examples("train")[:32])
    batch = {k: torch.from_numpy(v) for k, v in collate(features, 0).items()}
    with torch.no_grad():
        s = student(**batch, output_hidden_states=True).hidden_states
        t = teacher(**batch, output_hidden_states=True).hidden_states
    return hidden_state_loss(s, t, pairs, batch["attention_mask"], "mse").item()


def _teacher_whose_layers_matter(folder, tokenizer_dir):
    """A tiny BERT with large random weights: at the usual 0.02 init every layer is close to the
    identity, so a pruned copy already matches the teacher and there is nothing to recover."""
    from conftest import tiny_config
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    config = tiny_config("bert")
    config.initializer_range = 0.2
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


def test_recovery_with_the_hidden_loss_lowers_it(tmp_path, toy_task, tiny_tokenizer_dir):
    torch.set_num_threads(1)
    teacher = _teacher_whose_layers_matter(tmp_path / "teacher", tiny_tokenizer_dir)
    pruned = tmp_path / "pruned"
    prune_model(teacher, [1, 3], pruned, strategy="explicit")
    out = finetune(
        pruned, toy_task, _hidden_recipe(), tmp_path / "rec", teacher=teacher, progress=False
    )
    pairs = [(0, 0), (1, 2), (2, 4)]
    before = _measured_hidden_loss(pruned, teacher, pairs, toy_task)
    after = _measured_hidden_loss(out, teacher, pairs, toy_task)
    assert after < 0.5 * before
    record = json.loads((out / "finetune.json").read_text())
    assert record["distill_layer_map"] == [[0, 0], [1, 2], [2, 4]]
    assert record["recipe"]["distill_hidden_weight"] == 1.0
    hidden = record["loss_terms"]["hidden"]
    assert hidden["final"] < hidden["first"] and "soft" not in record["loss_terms"]
    # Deterministic: the same seed gives the same loss terms, step for step.
    again = finetune(
        pruned, toy_task, _hidden_recipe(), tmp_path / "rec2", teacher=teacher, progress=False
    )
    assert json.loads((again / "finetune.json").read_text())["loss_terms"] == record["loss_terms"]
    # The layer map's terms are part of the key: another hidden-loss kind retrains.
    stamp = (out / "finetune.json").stat().st_mtime_ns
    finetune(pruned, toy_task, _hidden_recipe(), out, teacher=teacher, progress=False)
    assert (out / "finetune.json").stat().st_mtime_ns == stamp
    finetune(
        pruned,
        toy_task,
        _hidden_recipe(distill_hidden_loss="cosine"),
        out,
        teacher=teacher,
        progress=False,
    )
    assert (out / "finetune.json").stat().st_mtime_ns != stamp


def test_attention_loss_trains_and_is_recorded(tmp_path, toy_task, tiny_model_dir):
    teacher = tiny_model_dir("bert", num_layers=4)
    pruned = tmp_path / "pruned"
    prune_model(teacher, [2], pruned, strategy="explicit")
    recipe = _hidden_recipe(max_steps=3, distill_alpha=0.5, distill_attention_weight=1.0)
    out = finetune(pruned, toy_task, recipe, tmp_path / "att", teacher=teacher, progress=False)
    record = json.loads((out / "finetune.json").read_text())
    assert set(record["loss_terms"]) == {"task", "soft", "hidden", "attention"}
    assert record["loss_terms"]["attention"]["first"] > 0
    assert record["distill_layer_map"] == [[0, 0], [1, 1], [2, 3], [3, 4]]


def test_layer_losses_need_a_teacher_and_a_layer_map(tmp_path, toy_task, tiny_model_dir):
    student = tiny_model_dir("bert", num_layers=2)
    with pytest.raises(UserError, match="no teacher"):
        finetune(student, toy_task, _hidden_recipe(), tmp_path / "x", progress=False)
    teacher = tiny_model_dir("bert", num_layers=4)
    with pytest.raises(UserError, match="no pruning.json"):
        finetune(student, toy_task, _hidden_recipe(), tmp_path / "x", teacher=teacher)
    assert not (tmp_path / "x").exists()
