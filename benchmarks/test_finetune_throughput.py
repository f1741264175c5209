"""Fine-tuning throughput and evaluation time on real MiniLM-L6 with SST-2 from ../shared/data.

    .venv/bin/pytest benchmarks/test_finetune_throughput.py -s

Measured side by side in one run, interleaved (A B A B) because the machine is shared: the
cpu-fast recipe (dynamic padding + length-grouped batches) against the same recipe padded to the
task's fixed max length (128). Target (issue 3): at least 2x the examples/s. Also the time to
evaluate the 872 SST-2 dev sentences (target under 15 s on 2 cores). Numbers land in
benchmarks/results/finetune.json.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import pytest

from asc_deploy.fsutil import read_json, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
MINILM = Path(os.environ.get("ASC_MODELS_DIR", ROOT / ".cache" / "models")) / "all-MiniLM-L6-v2"
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "finetune.json"
THREADS, STEPS, BATCH, TRAIN_SAMPLES, ROUNDS = 2, 8, 32, 2048, 2


@pytest.mark.real_model
@pytest.mark.slow
def test_finetune_throughput_and_eval_time(tmp_path):
    if not (MINILM / "config.json").is_file() or not DATA.is_dir():
        pytest.skip("needs MiniLM-L6 in .cache/models and ../shared/data")
    import torch

    from asc_deploy.compress.finetune import finetune
    from asc_deploy.config import FinetuneConfig, TaskConfig
    from asc_deploy.models.loading import load_model_and_tokenizer
    from asc_deploy.tasks.evaluation import evaluate_torch
    from asc_deploy.tasks.presets import build_task

    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()
    task = build_task(
        TaskConfig(preset="sst2", data_dir=DATA, max_length=128, max_train_samples=TRAIN_SAMPLES)
    )
    rates: dict[str, list[float]] = {"dynamic+grouped": [], "fixed-128": []}
    for round_index in range(ROUNDS):
        for name, dynamic in (("dynamic+grouped", True), ("fixed-128", False)):
            recipe = FinetuneConfig(
                preset="cpu-fast",
                max_steps=STEPS,
                batch_size=BATCH,
                seed=round_index,
                dynamic_padding=dynamic,
                group_by_length=dynamic,
            )
            out = finetune(MINILM, task, recipe, tmp_path / f"{name}-{round_index}", progress=False)
            rates[name].append(read_json(out / "finetune.json")["examples_per_s"])
    ratio = statistics.median(rates["dynamic+grouped"]) / statistics.median(rates["fixed-128"])

    finetuned = ROOT / ".cache" / "finetuned" / "minilm-sst2"
    source = finetuned if (finetuned / "config.json").is_file() else MINILM
    model, tokenizer = load_model_and_tokenizer(
        str(source), "classification", label_names=task.label_names
    )
    started = time.perf_counter()
    result = evaluate_torch(model, tokenizer, task, batch_size=64, progress=False)
    eval_seconds = time.perf_counter() - started  # tokenisation + inference + metrics

    record = {
        "schema": "asc-deploy.bench-finetune/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "settings": {
            "threads": THREADS,
            "steps": STEPS,
            "batch_size": BATCH,
            "rounds": ROUNDS,
            "train_samples": TRAIN_SAMPLES,
            "max_length": 128,
            "model": "all-MiniLM-L6-v2",
        },
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "finetune_examples_per_s": {k: statistics.median(v) for k, v in rates.items()},
        "finetune_examples_per_s_rounds": rates,
        "dynamic_over_fixed": ratio,
        "eval_sst2_dev": {
            "model": str(source.relative_to(ROOT)),
            "examples": result.num_examples,
            "seconds": eval_seconds,
            "inference_seconds": result.seconds,
            "accuracy": result.metrics["accuracy"],
        },
    }
    write_json_atomic(RESULTS, record)
    print(
        f"\nfine-tune ex/s {record['finetune_examples_per_s']} ratio {ratio:.2f}x; "
        f"eval 872 in {eval_seconds:.1f} s"
    )
    assert ratio >= 2.0
    assert result.num_examples == 872
