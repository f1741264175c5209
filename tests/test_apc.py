"""APC width compression: the reparameterisation, its initialisations and finalisation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config, tiny_model

from asc_deploy.compress.apc import resolve_widths
from asc_deploy.compress.apc_model import ApcModel
from asc_deploy.compress.width_init import build_bases, sample_sites
from asc_deploy.compress.width_map import width_map_for
from asc_deploy.config import FinetuneConfig, TaskConfig
from asc_deploy.errors import UserError
from asc_deploy.tasks.presets import build_task

POSITIVE = ["good", "great", "best", "love", "funny"]
NEGATIVE = ["bad", "terrible", "worst", "hate", "boring"]


@pytest.fixture
def toy_task(tmp_path):
    rows = []
    for i in range(64):
        words = POSITIVE if i % 2 else NEGATIVE
        sentence = "the movie " + " ".join(words[(i + k) % 5] for k in range(2 + i % 7))
        rows.append({"text": sentence, "label": i % 2})
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


def _batch(vocab: int = 200, batch: int = 3, tokens: int = 9, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, tokens), generator=g)
    mask = torch.ones(batch, tokens, dtype=torch.long)
    mask[0, 6:] = 0  # padding must not matter
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


def _bases(model, widths, init="sensitivity"):
    taps = width_map_for(model.config.model_type).taps_for(model)
    batches = [_batch(seed=s) for s in range(3)]
    sample = sample_sites(model, taps, batches, want_activations=init in ("kmeans", "svd"))
    return build_bases(sample, model.config, widths, init)


def _logits(model, batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return model(**inputs).logits


# -- the reparameterisation is the narrower function it claims ----------------------------------
@pytest.mark.parametrize("arch", ["bert", "mpnet", "roberta"])
def test_ffn_selection_equals_the_original_when_dropped_neurons_are_dead(arch):
    """Selecting FFN neurons whose output weights are zero changes nothing: W' = U W D is right."""
    model = tiny_model(arch, num_layers=2)
    widths = resolve_widths(model.config, ffn=40)
    bases = _bases(model, widths)
    for site, basis in bases.items():
        if site.startswith("ffn."):
            layer = int(site.split(".")[1])
            dropped = basis.down.sum(dim=1) == 0
            output = model.base_model.encoder.layer[layer].output.dense
            output.weight.data[:, dropped] = 0.0
    narrow = ApcModel(model, widths, bases, "none", True).finalise()
    assert narrow.config.intermediate_size == 40
    batch = _batch()
    assert torch.allclose(_logits(narrow, batch), _logits(model, batch), atol=1e-5)


def _zero_head_dims(model, bases, arch):
    """Zero q/k/v rows and output columns of every attention dimension the bases drop."""
    for site, basis in bases.items():
        if not site.startswith("attn."):
            continue
        layer = model.base_model.encoder.layer[int(site.split(".")[1])]
        dropped = basis.down.sum(dim=1) == 0
        if arch == "mpnet":
            qkv, out = (
                [layer.attention.attn.q, layer.attention.attn.k, layer.attention.attn.v],
                (layer.attention.attn.o),
            )
        else:
            a = layer.attention.self
            qkv, out = [a.query, a.key, a.value], layer.attention.output.dense
        for linear in qkv:
            linear.weight.data[dropped] = 0.0
            linear.bias.data[dropped] = 0.0
        out.weight.data[:, dropped] = 0.0


@pytest.mark.parametrize("arch", ["bert", "mpnet"])
def test_narrower_heads_keep_the_softmax_scale(arch):
    """Each head keeps 8 of its 16 dims; the dropped ones carry nothing, so only a correct query
    rescaling (sqrt(8/16)) reproduces the original attention logits."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = tiny_config(arch, num_layers=2)
    config.intermediate_size = 64
    model = AutoModelForSequenceClassification.from_config(config).eval()
    widths = resolve_widths(model.config, hidden=16)
    assert (widths.heads, widths.hidden // widths.heads) == (2, 8)
    bases = _bases(model, widths)
    # The first 16 residual dims on every hidden-width site, so the query's input side is known.
    eye = torch.eye(32)
    for site in ("hidden", "pooler", "head"):
        bases[site].down, bases[site].up = eye[:, :16], eye[:16]
    _zero_head_dims(model, bases, arch)
    apc = ApcModel(model, widths, bases, "none", True)
    q = apc.narrow_parameters()
    name = next(n for n in q if n.endswith(("query.weight", "attn.q.weight")))
    original = dict(model.named_parameters())[name]
    kept = bases["attn.0"].down.sum(dim=1) > 0
    expected = original[kept][:, :16] * (8 / 16) ** 0.5
    assert torch.allclose(q[name], expected, atol=1e-6)


# -- finalisation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["bert", "mpnet"])
@pytest.mark.parametrize("init", ["sensitivity", "kmeans", "svd", "random"])
def test_finalised_folder_reloads_as_the_apc_forward(tmp_path, arch, init):
    from transformers import AutoModelForSequenceClassification

    model = tiny_model(arch, num_layers=2)
    widths = resolve_widths(model.config, hidden=16, ffn=24)
    apc = ApcModel(model, widths, _bases(model, widths, init), "all", True)
    with torch.no_grad():  # trained projections: no longer a plain selection
        for p in list(apc.U.values()) + list(apc.B.values()) + list(apc.bD.values()):
            p.add_(0.01 * torch.randn_like(p))
    batch = _batch()
    apc.eval()
    expected = apc(**{k: v for k, v in batch.items() if k != "labels"}).logits.detach()
    apc.finalise().save_pretrained(tmp_path / "narrow")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "narrow").eval()
    assert reloaded.config.hidden_size == 16 and reloaded.config.intermediate_size == 24
    assert torch.allclose(_logits(reloaded, batch), expected, atol=1e-5)


@pytest.mark.parametrize("distilled", [False, True])
def test_apc_trains_and_the_loss_falls(toy_task, tiny_model_dir, tmp_path, distilled):
    """Without a teacher the task loss falls; with one (imitation only: alpha 1 plus the hidden
    states through the frozen projection) the narrow model learns to imitate the wide one."""
    from asc_deploy.compress.narrowing import narrow_model
    from asc_deploy.models.loading import load_config

    source = tiny_model_dir("bert", num_layers=2)
    widths = resolve_widths(load_config(source), hidden=16, ffn=32)
    imitation = {"distillation": True, "distill_alpha": 1.0, "distill_hidden_weight": 1.0}
    recipe = FinetuneConfig(
        preset="cpu-fast", max_steps=30, batch_size=8, learning_rate=5e-3,
        **(imitation if distilled else {}),
    )  # fmt: skip
    record = narrow_model(
        source, toy_task, widths, tmp_path / "out", steps=30, recipe=recipe,
        teacher=source if distilled else None, biases="all", progress=False,
    )  # fmt: skip
    training = record["training"]
    assert training["steps"] == 30 and training["distilled"] is distilled
    assert training["final_loss"] < 0.9 * training["first_loss"]
    assert record["parameters_after"] < record["parameters_before"]
    assert (tmp_path / "out" / "width_projection.safetensors").is_file()


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"hidden": 15}, "apc.hidden: 15 is not divisible by the 2 heads"),
        ({"hidden": 32}, "must be below the model's hidden width 32"),
        ({"ffn": 64}, "must be below the model's ffn width 64"),
        ({"hidden": 24, "heads": 1}, "apc.heads: 1 heads of 24 dimensions exceed"),
        ({}, "name at least one of hidden, ffn, heads"),
    ],
)
def test_bad_widths_name_the_key(kwargs, words):
    with pytest.raises(UserError, match=words):
        resolve_widths(tiny_config("bert"), **kwargs)


def test_mpnet_keeps_its_heads_and_distilbert_has_no_mapping():
    with pytest.raises(UserError, match="shares one relative-position table"):
        resolve_widths(tiny_config("mpnet"), hidden=16, heads=1)
    with pytest.raises(UserError, match="architecture 'distilbert' has no width mapping"):
        resolve_widths(tiny_config("distilbert"), ffn=32)


# -- real weights, real sentences -----------------------------------------------------------------
@pytest.mark.real_model
@pytest.mark.slow
def test_real_minilm_narrowed_is_exact_and_exports_fused(minilm_dir, shared_data, tmp_path):
    """MiniLM-L6 narrowed to hidden 288 / FFN 768 (sensitivity on SST-2 training sentences,
    projections then perturbed as training would): the APC forward and the reloaded plain folder
    agree to 1e-5 on real dev sentences, and the folder exports, validates and fuses 6 Attention
    nodes like the original."""
    from transformers import AutoModelForSequenceClassification

    from asc_deploy.compress.finetune import _load
    from asc_deploy.deploy.export import export_artifact
    from asc_deploy.deploy.optimize import count_fused_attention, optimize_artifact
    from asc_deploy.tasks.base import collate

    task = build_task(TaskConfig(preset="sst2", data_dir=shared_data / "sst2"))
    model, tokenizer = _load(minilm_dir, task, False)
    widths = resolve_widths(model.config, hidden=288, ffn=768)
    assert widths.heads == 12  # 12 heads of 24 instead of 32
    taps = width_map_for("bert").taps_for(model)
    from asc_deploy.compress.narrowing import importance_batches

    sample = sample_sites(model, taps, importance_batches(task, tokenizer, 64), False)
    bases = build_bases(sample, model.config, widths, "sensitivity")
    apc = ApcModel(model, widths, bases, "ud", True)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in list(apc.U.values()) + list(apc.bU.values()):
            p.add_(1e-3 * torch.randn_like(p))
    sentences = [e["text"] for e in task.load_examples("eval")[:16]]
    features = [dict(tokenizer(s)) for s in sentences]
    batch = {k: torch.from_numpy(v) for k, v in collate(features, tokenizer.pad_token_id).items()}
    apc.eval()
    with torch.no_grad():
        expected = apc(**batch).logits
    folder = tmp_path / "narrow"
    apc.finalise().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        got = reloaded(**batch).logits
    assert (got - expected).abs().max() <= 1e-5
    assert sum(p.numel() for p in reloaded.parameters()) < 0.8 * model.num_parameters()

    manifest = export_artifact(folder, tmp_path / "art" / "fp32", "classification", features)
    assert manifest["validation"]["max_abs_diff"] <= 1e-4
    report = optimize_artifact(tmp_path / "art" / "fp32", tmp_path / "art" / "optimized")
    assert count_fused_attention(tmp_path / "art" / "optimized" / "model.onnx") == 6
    assert report["transform"]["unfused_attention_layers"] == 0


def test_width_first_then_depth_keeps_the_projection_and_the_layer_map(
    toy_task, tiny_model_dir, tmp_path
):
    """apc.order width-first: narrow the 4-layer model, then remove layer 2 from the narrow one;
    the final distillation still matches each kept layer to its teacher layer, through the
    projection the narrowing saved."""
    from asc_deploy.compress.finetune import finetune
    from asc_deploy.compress.narrowing import narrow_model
    from asc_deploy.compress.pruning import prune_model
    from asc_deploy.models.loading import load_config

    source = tiny_model_dir("bert", num_layers=4)
    widths = resolve_widths(load_config(source), hidden=16)
    narrow_model(source, toy_task, widths, tmp_path / "narrow", progress=False)
    prune_model(tmp_path / "narrow", [2], tmp_path / "pruned", "explicit")
    assert (tmp_path / "pruned" / "width_projection.safetensors").is_file()
    recipe = FinetuneConfig(
        preset="cpu-fast", max_steps=2, batch_size=8, distillation=True, distill_hidden_weight=1.0
    )
    out = finetune(tmp_path / "pruned", toy_task, recipe, tmp_path / "rec", teacher=source,
                   progress=False)  # fmt: skip
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["distill_layer_map"] == [[0, 0], [1, 1], [2, 3], [3, 4]]
    assert summary["loss_terms"]["hidden"]["first"] > 0


def test_a_student_of_another_width_without_a_projection_is_refused(
    toy_task, tiny_model_dir, tmp_path
):
    from transformers import AutoModelForSequenceClassification

    from asc_deploy.compress.finetune import finetune

    source = tiny_model_dir("bert", num_layers=2)
    config = tiny_config("bert", num_layers=2)
    config.hidden_size = 16
    other = tmp_path / "other"
    AutoModelForSequenceClassification.from_config(config).save_pretrained(other)
    for f in source.glob("*token*"):
        (other / f.name).write_bytes(f.read_bytes())
    (other / "vocab.txt").write_bytes((source / "vocab.txt").read_bytes())
    recipe = FinetuneConfig(
        preset="cpu-fast", max_steps=2, batch_size=8, distillation=True, distill_hidden_weight=1.0
    )
    with pytest.raises(UserError, match="no width_projection.safetensors"):
        finetune(other, toy_task, recipe, tmp_path / "rec", teacher=source, progress=False)
