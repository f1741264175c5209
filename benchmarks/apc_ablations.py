"""APC's ablations at small scale on a finished run's fine-tuned model (docs/apc-study.md).

On the run's uncompressed fine-tuned model, narrowed to one shape (default hidden 288 / FFN 1152):
- **initialisations** after `--steps` APC steps (sensitivity, k-means, SVD, random), each
  evaluated as finalised, with no further training: what the paper's init table compares;
- **bias variants** (none, b_U + b_D, all three) after the same steps, sensitivity init;
- **what trained projections add**: 0 APC steps (structured pruning) vs `--steps` steps, each then
  distilled for `--final-steps` steps as the pipeline's recovery does;
- **fine-tune the finalised model vs all parameters**: after the APC steps, either finalise and
  distil the narrow model for `--final-steps`, or keep training APC (original weights and
  projections) for the same steps and finalise at the end; accuracy and wall time of each.

Every row is evaluated on the run's evaluation split in PyTorch, with the paired bootstrap 95% CI
against the uncompressed model. The objective is the task loss plus distillation from the
fine-tuned model (the staged checkpoints carry no MLM/NSP heads); say so with any number quoted.

    .venv/bin/python benchmarks/apc_ablations.py benchmarks/configs/default.yaml \
        [--widths hidden=288,ffn=1152] [--steps 100] [--final-steps 300]

Writes benchmarks/results/apc_ablations_<run>.json (resumable: finished rows are kept). Run it
alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asc_deploy.compress.apc import resolve_widths  # noqa: E402
from asc_deploy.config import load_run_config  # noqa: E402
from asc_deploy.fsutil import write_json_atomic  # noqa: E402
from asc_deploy.tasks.presets import build_task  # noqa: E402


def _rows(steps: int, final: int) -> list[dict[str, Any]]:
    rows = [
        {"group": "init", "init": init, "biases": "none", "steps": steps, "final": 0}
        for init in ("sensitivity", "kmeans", "svd", "random")
    ]
    rows += [
        {"group": "biases", "init": "sensitivity", "biases": b, "steps": steps, "final": 0}
        for b in ("ud", "all")
    ]
    rows += [  # fmt: skip
        {
            "group": "projections",
            "init": "sensitivity",
            "biases": "none",
            "steps": s,
            "final": final,
        }
        for s in (0, steps)
    ]
    rows.append(
        {"group": "all-parameters", "init": "sensitivity", "biases": "none",
         "steps": steps + final, "final": 0}
    )  # fmt: skip
    return rows


def _label(row: dict) -> str:
    return f"{row['group']}:{row['init']}:{row['biases']}:{row['steps']}+{row['final']}"


def _run_row(row, base: Path, task, widths, recipe, work: Path, reference) -> dict:
    from asc_deploy.compress.finetune import finetune
    from asc_deploy.compress.narrowing import narrow_model

    started = time.perf_counter()
    folder = work / _label(row).replace(":", "_").replace("+", "_")
    record = narrow_model(
        base, task, widths, folder / "narrow", init=row["init"], biases=row["biases"],
        steps=row["steps"], recipe=recipe.model_copy(update={"learning_rate": 5e-5}),
        teacher=base,
    )  # fmt: skip
    model_dir = folder / "narrow"
    if row["final"]:
        model_dir = finetune(
            model_dir, task, recipe.model_copy(update={"max_steps": row["final"]}),
            folder / "final", teacher=base,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    accuracy, comparison = _evaluate(model_dir, task, reference)
    return {
        **row,
        "label": _label(row),
        "accuracy": accuracy,
        "comparison": comparison,
        "seconds": round(seconds, 1),
        "parameters": record["parameters_after"],
    }


def _evaluate(model_dir: Path, task, reference) -> tuple[float, dict]:
    from asc_deploy.compress.finetune import _load
    from asc_deploy.measure.statistics import compare_predictions
    from asc_deploy.tasks.evaluation import evaluate_torch

    model, tokenizer = _load(model_dir, task, False)
    result = evaluate_torch(model, tokenizer, task, with_cls=False)
    stats = compare_predictions(reference, result.predictions, task.family)[task.primary_metric]
    return result.metrics[task.primary_metric], stats.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--widths", default="hidden=288,ffn=1152")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--final-steps", type=int, default=300)
    args = parser.parse_args()

    from asc_deploy.cli.compress_verbs import _parse_widths
    from asc_deploy.compress.finetune import _load
    from asc_deploy.models.loading import load_config
    from asc_deploy.tasks.evaluation import evaluate_torch

    cfg = load_run_config(args.config)
    root = Path(cfg.output_dir) / cfg.name
    base = root / "models" / "uncompressed"
    task = build_task(cfg.task)
    widths = resolve_widths(load_config(base), **_parse_widths(args.widths), key="--widths")
    out = ROOT / "benchmarks" / "results" / f"apc_ablations_{cfg.name}.json"
    done = {r["label"]: r for r in json.loads(out.read_text())["rows"]} if out.is_file() else {}
    model, tokenizer = _load(base, task, False)
    reference = evaluate_torch(model, tokenizer, task, with_cls=False)
    rows = []
    for row in _rows(args.steps, args.final_steps):
        result = done.get(_label(row)) or _run_row(
            row, base, task, widths, cfg.recovery, root / "apc-ablations", reference.predictions
        )
        rows.append(result)
        print(f"{result['label']}: {result['accuracy']:.2f} ({result['comparison']['phrase']}), "
              f"{result['seconds']:.0f} s", flush=True)  # fmt: skip
        write_json_atomic(out, _document(cfg, args, widths, reference, rows))


def _document(cfg, args, widths, reference, rows) -> dict:
    from asc_deploy.measure.system import host_info

    return {
        "run": cfg.name,
        "widths": {"hidden": widths.hidden, "ffn": widths.ffn, "heads": widths.heads},
        "steps": args.steps,
        "final_steps": args.final_steps,
        "uncompressed": reference.metrics,
        "objective": "task loss + distillation from the fine-tuned model (no MLM/NSP heads)",
        "host": host_info()["fingerprint"],
        "rows": rows,
    }


if __name__ == "__main__":
    main()
