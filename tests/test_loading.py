"""Loading models as bare encoders (the ASC profile reads hidden states only)."""

from __future__ import annotations

import pytest
from conftest import ARCHS

from asc_deploy.models.loading import load_model_and_tokenizer


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("saved", ["classification", "encoder"])
def test_an_encoder_loads_without_a_made_up_or_dropped_pooler(arch, saved, tiny_model_dir, capfd):
    """A fine-tuned classifier's folder may hold no pooler (MPNet, RoBERTa): none is made up,
    which printed 'newly initialized ... TRAIN this model'; a pooler that was saved is kept,
    which would otherwise print 'weights ... were not used'."""
    folder = tiny_model_dir(arch, saved)
    capfd.readouterr()
    model, _ = load_model_and_tokenizer(folder, "encoder")
    err = capfd.readouterr().err
    assert "newly initialized" not in err and "were not used" not in err
