"""Loading models as bare encoders (the ASC profile reads hidden states only)."""

from __future__ import annotations

import pytest
from conftest import ARCHS
from safetensors import safe_open

from asc_deploy.models.loading import load_model_and_tokenizer


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("saved", ["classification", "encoder"])
def test_an_encoder_has_a_pooler_exactly_when_its_folder_saved_one(arch, saved, tiny_model_dir):
    """A fine-tuned classifier's folder may hold no pooler (MPNet, RoBERTa): making one up
    printed 'newly initialized ... TRAIN this model' in every profile; dropping a saved one
    would print 'weights ... were not used'."""
    folder = tiny_model_dir(arch, saved)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        saved_pooler = any(".pooler." in f".{name}" for name in weights.keys())  # noqa: SIM118
    model, _ = load_model_and_tokenizer(folder, "encoder")
    assert (getattr(model, "pooler", None) is not None) == saved_pooler
