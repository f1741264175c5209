"""Export + validation + dynamic int8 of real MiniLM-L6 (fresh classification head) on SST-2 inputs.

    .venv/bin/pytest benchmarks/test_export_bench.py -s

Targets (issue 4): the whole chain under 60 s on this machine; the int8-dynamic graph at most 30%
of the fp32 one. Numbers land in benchmarks/results/export.json.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pytest

from asc_deploy.fsutil import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
MINILM = Path(os.environ.get("ASC_MODELS_DIR", ROOT / ".cache" / "models")) / "all-MiniLM-L6-v2"
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "export.json"
VALIDATE, SAMPLES, THREADS = 32, 300, 2


@pytest.fixture(scope="module")
def minilm_classifier(tmp_path_factory) -> Path:
    """MiniLM-L6 with a fresh (seeded) 2-class head, saved as a from_pretrained folder."""
    if not (MINILM / "config.json").is_file():
        pytest.skip(f"MiniLM-L6 not staged at {MINILM}; run `make models`")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("minilm-cls")
    AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(MINILM).save_pretrained(folder)
    return folder


@pytest.mark.real_model
@pytest.mark.slow
def test_export_validate_quantize_minilm(minilm_classifier, tmp_path):
    import torch
    from transformers import AutoTokenizer

    from asc_deploy.config import TaskConfig
    from asc_deploy.deploy.export import export_artifact
    from asc_deploy.deploy.quantize import detect_isa, quantize_artifact
    from asc_deploy.tasks.presets import build_task

    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    torch.set_num_threads(THREADS)
    task = build_task(TaskConfig(preset="sst2", data_dir=DATA))
    tokenizer = AutoTokenizer.from_pretrained(minilm_classifier)
    features = task.encode(tokenizer, task.load_examples("eval", SAMPLES))
    load_before = os.getloadavg()

    started = time.perf_counter()
    fp32 = export_artifact(
        minilm_classifier,
        tmp_path / "fp32",
        "classification",
        features[:VALIDATE],
        features,
        task_name="sst2",
        reuse=False,
    )
    exported = time.perf_counter()
    int8 = quantize_artifact(tmp_path / "fp32", tmp_path / "int8-dynamic", "dynamic", reuse=False)
    finished = time.perf_counter()

    ratio = int8["size_bytes"] / fp32["size_bytes"]
    result = {
        "schema": "asc-deploy.export-bench/1",
        "model": "all-MiniLM-L6-v2 + fresh 2-class head",
        "host": {
            "machine": platform.machine(),
            "isa": detect_isa(),
            "cpu_count": os.cpu_count(),
            "torch_threads": THREADS,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "seconds": {
            "export_and_validate": exported - started,
            "dynamic_int8": finished - exported,
            "total": finished - started,
        },
        "size_bytes": {"fp32": fp32["size_bytes"], "int8-dynamic": int8["size_bytes"]},
        "int8_size_ratio": ratio,
        "validation": {"fp32_vs_pytorch": fp32["validation"], "int8_vs_fp32": int8["validation"]},
        "int8_settings": int8["settings"],
        "targets": {"total_seconds_max": 60, "int8_size_ratio_max": 0.30},
    }
    write_json_atomic(RESULTS, result)
    print(
        f"\nexport+validate {exported - started:.1f} s, int8 {finished - exported:.1f} s, "
        f"size ratio {ratio:.3f}, fp32 max diff {fp32['validation']['max_abs_diff']:.2e}"
    )
    assert fp32["validation"]["max_abs_diff"] <= 1e-4
    assert finished - started < 60
    assert ratio <= 0.30
