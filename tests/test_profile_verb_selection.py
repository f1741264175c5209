"""`asc-deploy profile` selects layers exactly as `run`'s profile and select stages do.

Regression: the verb selected on the matrix as profiled and `run` on the matrix as stored
(rounded to 6 places), so an entry within rounding of a threshold's edge was removed by one and
kept by the other.
"""

from __future__ import annotations

import json
from pathlib import Path

from asc_deploy.cli.compress_verbs import profile as profile_verb
from asc_deploy.compress.asc import select_redundant_layers
from asc_deploy.compress.profiling import profile_task
from asc_deploy.config import RunConfig
from asc_deploy.stages import compress
from asc_deploy.stages.core import Context, StageStore
from asc_deploy.tasks.presets import build_task

# A tiny random encoder's S[0][1] is above 0.99: the default 0.01 would put its edge above a
# threshold of 1.
EPSILON = 0.0


def _sst2(folder: Path) -> Path:
    folder.mkdir()
    rows = ["the movie was good", "a terrible boring film", "great story", "not funny at all"]
    body = "text\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(rows))
    (folder / "train.tsv").write_text(body)
    (folder / "dev.tsv").write_text(body)
    return folder


def _threshold_on_the_rounding(model_dir: Path, task) -> float:
    """A threshold whose edge (t - epsilon) lies within 1e-7 of S[0][1] as profiled, but on the
    other side of S[0][1] as stored: layer 1 is removed on one matrix and kept on the other."""
    exact = profile_task(model_dir, task)[0].matrix
    stored = exact.round(6)
    gap = min(abs(exact[0, 1] - stored[0, 1]), 1e-7) / 2
    assert gap > 1e-12, "S[0][1] is already a 6-place number; pick another model seed"
    edge = exact[0, 1] - gap if exact[0, 1] > stored[0, 1] else exact[0, 1] + gap
    threshold = float(edge + EPSILON)
    removes_layer_1 = [1 in select_redundant_layers(m, threshold, EPSILON) for m in (exact, stored)]
    assert removes_layer_1[0] != removes_layer_1[1]  # the threshold does split the two matrices
    return threshold


def test_profile_verb_selects_as_run_does_at_a_threshold_edge(tiny_model_dir, tmp_path):
    model = tiny_model_dir("bert", "classification", num_layers=4)
    data = _sst2(tmp_path / "sst2")
    cfg = RunConfig(
        model=str(model),
        model_finetuned=True,
        task={"preset": "sst2", "data_dir": str(data)},
        comparisons={"strategies": []},  # ASC's own selections only
    )
    task = build_task(cfg.task)
    threshold = _threshold_on_the_rounding(model, task)
    cfg = cfg.model_copy(
        update={"asc": cfg.asc.model_copy(update={"thresholds": [threshold], "epsilon": EPSILON})}
    )

    store, base = StageStore(Context(tmp_path / "run")), compress.model_folder(model)
    stored = store.run(compress.profile, cfg, model=base, task=task)
    run = store.run(compress.select_candidates, cfg, profile=stored, model=base, task=task)

    out = tmp_path / "verb"
    profile_verb(
        str(model), out, task="sst2", data_dir=data, thresholds=repr(threshold), epsilon=EPSILON
    )
    verb = json.loads((out / "similarity.json").read_text())
    assert verb["selections"] == run.selections
    assert verb["matrix"] == stored.matrix
