"""Layer removal is exactly identity replacement, for every architecture and head."""

import copy

import pytest
import torch
from conftest import ARCHS, tiny_model

from asc_deploy.errors import UserError
from asc_deploy.models.adapters import adapter_for
from asc_deploy.models.surgery import remove_layers, replace_with_identity


def _inputs(vocab: int = 200, batch: int = 3, seq: int = 11):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # one padded row, so masking is exercised too
    return {"input_ids": ids, "attention_mask": mask}


def _outputs(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    if hasattr(out, "logits"):
        return [out.logits]
    if hasattr(out, "start_logits"):
        return [out.start_logits, out.end_logits]
    return [out.last_hidden_state]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", ["classification", "question-answering", "encoder"])
def test_removal_equals_identity_replacement(arch, head):
    original = tiny_model(arch, head, num_layers=4)
    inputs = _inputs()
    reference = replace_with_identity(copy.deepcopy(original), [0, 2])
    pruned = remove_layers(copy.deepcopy(original), [0, 2])

    adapter = adapter_for(original.config.model_type)
    assert len(adapter.layers(pruned)) == 2
    assert adapter.num_layers(pruned) == 2
    for a, b in zip(_outputs(reference, inputs), _outputs(pruned, inputs), strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    # And removal really changed the encoder's function (the test can fail).
    with torch.no_grad():
        before = original.base_model(**inputs).last_hidden_state
        after = pruned.base_model(**inputs).last_hidden_state
    assert not torch.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_pruned_model_round_trips_through_from_pretrained(arch, tmp_path):
    from transformers import AutoModelForSequenceClassification

    pruned = remove_layers(tiny_model(arch, "classification", num_layers=4), [1, 3])
    pruned.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    inputs = _inputs()
    assert torch.equal(_outputs(pruned, inputs)[0], _outputs(reloaded, inputs)[0])


def test_refuses_to_remove_every_layer():
    with pytest.raises(UserError, match="refusing to remove all 4"):
        remove_layers(tiny_model("bert", num_layers=4), [0, 1, 2, 3])


def test_rejects_layer_outside_model():
    with pytest.raises(UserError, match="outside 0..3"):
        remove_layers(tiny_model("bert", num_layers=4), [4])
