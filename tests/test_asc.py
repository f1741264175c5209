"""The similarity matrix and the authors' one-shot selection rule."""

import numpy as np
import pytest
import torch
from conftest import tiny_model

from asc_deploy.compress.asc import (
    profile_similarity,
    select_redundant_layers,
    selections_for_thresholds,
)
from asc_deploy.errors import UserError
from asc_deploy.models.surgery import IdentityLayer


def _matrix(pairs: dict[tuple[int, int], float], size: int) -> np.ndarray:
    m = np.full((size, size), 0.5)
    for (i, k), v in pairs.items():
        m[i, k] = m[k, i] = v
    np.fill_diagonal(m, 1.0)
    return m


def test_selects_states_close_to_an_earlier_kept_state():
    m = _matrix({(0, 1): 0.95, (2, 3): 0.91}, size=5)
    assert select_redundant_layers(m, 0.90) == [1, 3]


def test_removed_state_never_serves_as_reference():
    # 1 is close to 0 and gets removed; 2 is close only to 1, so it must stay.
    m = _matrix({(0, 1): 0.95, (1, 2): 0.99}, size=4)
    assert select_redundant_layers(m, 0.90) == [1]


def test_chain_through_kept_state():
    # 2 is kept (not close to 0 or 1-as-removed); 3 is close to 2 and goes.
    m = _matrix({(0, 1): 0.95, (1, 2): 0.99, (2, 3): 0.92}, size=4)
    assert select_redundant_layers(m, 0.90) == [1, 3]


def test_epsilon_widens_the_threshold():
    m = _matrix({(0, 2): 0.895}, size=3)
    assert select_redundant_layers(m, 0.90) == [2]  # 0.895 >= 0.90 - 0.01
    assert select_redundant_layers(m, 0.90, epsilon=0.0) == []
    assert select_redundant_layers(_matrix({(0, 2): 0.889}, 3), 0.90) == []


def test_embedding_state_is_never_removed_and_thresholds_reuse_one_matrix():
    m = _matrix({(0, 1): 0.86, (1, 2): 0.95, (0, 3): 0.81}, size=4)
    assert selections_for_thresholds(m, [0.9, 0.85, 0.8]) == {0.9: [2], 0.85: [1], 0.8: [1, 3]}


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01])
def test_threshold_outside_unit_interval_is_an_error(bad):
    with pytest.raises(UserError, match="outside"):
        select_redundant_layers(np.eye(3), bad)


def _batches(batch_size: int, pad_to: int | None = None, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    lengths = [5, 9, 3, 12, 7, 4, 10]
    rows = [torch.randint(5, 200, (n,), generator=g) for n in lengths]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = pad_to or max(len(r) for r in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(chunk):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        yield {"input_ids": ids, "attention_mask": mask}


def test_matrix_is_symmetric_unit_diagonal_and_bounded():
    profile = profile_similarity(tiny_model("bert", "encoder", num_layers=4), _batches(3))
    m = profile.matrix
    assert m.shape == (5, 5) and profile.num_layers == 4
    assert np.allclose(m, m.T)
    assert np.allclose(np.diag(m), 1.0)
    assert (m <= 1 + 1e-6).all() and (m >= -1 - 1e-6).all()
    assert profile.examples == 7 and profile.tokens == 50


def test_batch_size_and_padding_do_not_change_the_matrix():
    model = tiny_model("bert", "encoder", num_layers=4)
    reference = profile_similarity(model, _batches(1)).matrix
    for batch_size, pad_to in [(2, None), (7, None), (3, 32)]:
        other = profile_similarity(model, _batches(batch_size, pad_to)).matrix
        assert np.allclose(reference, other, atol=1e-5), (batch_size, pad_to)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "mpnet"])
def test_identity_layer_profiles_as_one_and_is_selected(arch):
    model = tiny_model(arch, "encoder", num_layers=4)
    from asc_deploy.models.adapters import adapter_for

    adapter_for(model.config.model_type).layers(model)[1] = IdentityLayer()  # layer 2 (1-based)
    m = profile_similarity(model, _batches(4)).matrix
    assert m[1, 2] == pytest.approx(1.0, abs=1e-6)
    assert 2 in select_redundant_layers(m, 0.90)


def test_similarity_scale_names_the_most_similar_adjacent_pair():
    from asc_deploy.compress.profiling import similarity_scale

    m = _matrix({(0, 1): 0.7, (1, 2): 0.93, (2, 3): 0.6, (0, 3): 0.96}, size=4)
    assert similarity_scale(m) == {
        "max_adjacent": 0.93,
        "max_adjacent_layer": 2,
        "min_adjacent": 0.6,
        "max_off_diagonal": 0.96,
    }


def test_written_similarity_records_epsilon_scale_and_target_depths(tmp_path):
    import json

    from asc_deploy.compress.asc import thresholds_for_depths
    from asc_deploy.compress.profiling import write_similarity

    m = _matrix({(0, 1): 0.95, (2, 3): 0.91}, size=5)
    record = {"schema": "asc-deploy.similarity/1", "num_layers": 4, "matrix": m.tolist()}
    selections = selections_for_thresholds(m, [0.9, 0.5], epsilon=0.02)
    write_similarity(tmp_path / "sim", record, selections, 0.02, thresholds_for_depths(m, [2, 3]))
    written = json.loads((tmp_path / "sim" / "similarity.json").read_text())
    assert written["epsilon"] == 0.02 and written["scale"]["max_adjacent_layer"] == 1
    assert written["selections"] == {"0.9": [1, 3], "0.5": [1, 2, 3, 4]}
    assert written["depths"]["2"]["layers"] == [1, 3]
    assert written["depths"]["2"]["threshold"] == pytest.approx(0.92)
    assert written["depths"]["3"]["threshold"] is None and written["depths"]["3"]["nearest"]
    assert (tmp_path / "sim" / "similarity.png").read_bytes().startswith(b"\x89PNG")
