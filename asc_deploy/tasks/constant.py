"""The floor: the best score a prediction that ignores its input gets on the evaluation split.

A fine-tuned model that does not clear it has not learned the task, and comparing compressions
against it says little (the SQuAD 2.0 study's reader scored F1 56.34 where always answering "no
answer" scores 56.45). Scored with the task's own metric code, so it is the number the report's
metric column would show for that predictor.
"""

from __future__ import annotations

from typing import Any

from asc_deploy.records import ConstantBaseline
from asc_deploy.tasks.base import Example, Task


def constant_predictions(task: Task, examples: list[Example]) -> dict[str, list[dict[str, Any]]]:
    """Prediction records of every constant predictor, by what it predicts: each class for
    classification, "no answer" for SQuAD 2.0; none for SQuAD 1.1 (every question has one)."""
    if task.family == "classification":
        return {
            name: [{"id": e["id"], "prediction": i, "gold": e["label"]} for e in examples]
            for i, name in enumerate(task.label_names)
        }
    if getattr(task, "version_2", False):
        return {
            "no answer": [
                {"id": e["id"], "prediction": "", "gold": list(e["answers"]["text"])}
                for e in examples
            ]
        }
    return {}


def constant_baseline(task: Task) -> ConstantBaseline | None:
    """The constant predictor with the best primary metric on the evaluation split."""
    examples = task.load_examples("eval")
    scored = [
        ConstantBaseline(prediction=name, metrics=task.compute_metrics(examples, predictions))
        for name, predictions in constant_predictions(task, examples).items()
    ]
    return max(scored, key=lambda b: b.metrics[task.primary_metric], default=None)
