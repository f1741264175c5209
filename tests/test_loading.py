"""Loading models: a fine-tuned classifier's folder read as a bare encoder (the ASC profile)."""

from __future__ import annotations

import pytest
from conftest import ARCHS

from asc_deploy.models.loading import load_model_and_tokenizer


@pytest.mark.parametrize("arch", ARCHS)
def test_a_classifier_read_as_an_encoder_loads_without_a_fresh_pooler(arch, tiny_model_dir, capfd):
    folder = tiny_model_dir(arch, "classification")
    capfd.readouterr()
    model, _ = load_model_and_tokenizer(folder, "encoder")
    # The profile reads hidden states only: no pooler is made up, and no "TRAIN this model".
    assert "newly initialized" not in capfd.readouterr().err
    assert getattr(model, "pooler", None) is None
