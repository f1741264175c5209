"""The bad-input probe of issue 28: each finding a case here, one `error:` line and exit 2 (or a
count of what was dropped), checked before the long work, nothing half-written.

Runs the real `asc-deploy` entry point in-process on the tiny model of test_bad_inputs.
"""

from __future__ import annotations

import json

import pytest
import test_bad_inputs
from conftest import SHARED_DATA
from deploy_helpers import run_cli
from test_bad_inputs import Tiny, assert_one_error_line

tiny = test_bad_inputs.tiny  # the module-scoped fixture: a tiny model, its fp32 and int8 artifacts


# -- finding 3: a task that does not match the artifact's ------------------------------------------
@pytest.mark.parametrize("mode", ["mixed", "static"])
def test_quantize_refuses_another_task_than_the_artifacts(
    mode, tiny: Tiny, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "q"
    args = ["quantize", tiny.fp32, "--mode", mode, "--task", "mrpc", "--data-dir", SHARED_DATA]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--mixed-samples", "8", "-o", out)
    assert_one_error_line(code, err, f"{tiny.fp32}", "exported for task sst2", "mrpc")
    assert not out.exists()


def test_calibrated_variants_record_their_task_and_data_hash(
    tiny: Tiny, tmp_path, monkeypatch, capsys
):
    from asc_deploy.config import TaskConfig
    from asc_deploy.fsutil import hash_json
    from asc_deploy.tasks.presets import build_task

    out = tmp_path / "static"
    args = ["quantize", tiny.fp32, "--mode", "static", "--task", "sst2", "--data-dir", SHARED_DATA]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--calibration-samples", "8", "-o", out)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    task = build_task(TaskConfig(preset="sst2", data_dir=SHARED_DATA))
    assert manifest["settings"]["data"] == {
        "task": "sst2",
        "train_hash": hash_json(task.data_identity("train")),
    }
