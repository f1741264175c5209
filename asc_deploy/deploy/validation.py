"""Compare a graph's outputs with reference outputs on real inputs: numbers, not assumptions.

Imports neither torch nor transformers: the PyTorch reference is computed by export.py and
handed in as numpy arrays; variants derived from an fp32 artifact are checked against that
artifact's ONNX outputs on its saved sample inputs.

Tolerances (max absolute logit difference on real tokens) and whether the predicted class / best
span must be identical on every validation input, per variant:
- fp32: 1e-4 and identical predictions (the exporter must be exact up to float reordering);
- optimized: 1e-3 and identical predictions (fused kernels reorder sums and use other
  reductions; 1e-3 leaves room for that and still catches a wrong fusion);
- fp16: 5e-2, predictions recorded only (half precision flips near-ties legitimately);
- int8-dynamic, int8-static: no logit tolerance, predictions recorded only: quantisation error
  is judged by task accuracy on the dev set (`ort_evaluate.evaluate_onnx`), not by logits;
- int8-mixed: as its int8 base (dynamic or static): some layers stay fp32, the rest carry the
  same quantisation error, and its accuracy is judged twice by task metrics, within
  `export.int8_budget` on held-out training examples while it is built, then on the dev set.

A variant without an entry is refused: a new variant must say how it is checked, rather than
pass unchecked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asc_deploy.errors import UserError

TOLERANCES: dict[str, float | None] = {
    "fp32": 1e-4,
    "optimized": 1e-3,
    "fp16": 5e-2,
    "int8-dynamic": None,
    "int8-static": None,
    "int8-mixed": None,
}
STRICT_PREDICTIONS = {"fp32", "optimized"}

Outputs = dict[str, np.ndarray]


def _predictions(outputs: Outputs, mask: np.ndarray) -> np.ndarray:
    """Class index per row, or (best start, best end) per row over the real tokens."""
    if "logits" in outputs:
        return outputs["logits"].argmax(axis=-1)[:, None]
    valid = mask.astype(bool)
    start = np.where(valid, outputs["start_logits"], -np.inf).argmax(axis=-1)
    end = np.where(valid, outputs["end_logits"], -np.inf).argmax(axis=-1)
    return np.stack([start, end], axis=-1)


def _max_diff(ref: Outputs, got: Outputs, mask: np.ndarray) -> float:
    worst = 0.0
    for name, r in ref.items():
        g = got[name].astype(np.float64)
        diff = np.abs(r.astype(np.float64) - g)
        if diff.ndim == 2 and diff.shape == mask.shape:  # per-token outputs: padding is noise
            diff = diff[mask.astype(bool)]
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
    return worst


def compare_outputs(
    reference: list[Outputs], candidate: list[Outputs], masks: list[np.ndarray]
) -> dict[str, Any]:
    """Max absolute difference and prediction agreement over batches of outputs."""
    max_diff, agree, total = 0.0, 0, 0
    for ref, got, mask in zip(reference, candidate, masks, strict=True):
        missing = set(ref) - set(got)
        if missing:
            raise UserError(f"the ONNX graph lacks outputs {sorted(missing)}; re-export the model")
        max_diff = max(max_diff, _max_diff(ref, got, mask))
        same = (_predictions(ref, mask) == _predictions(got, mask)).all(axis=-1)
        agree += int(same.sum())
        total += len(same)
    return {
        "max_abs_diff": max_diff,
        "prediction_agreement": agree / total if total else 1.0,
        "mismatched_predictions": total - agree,
        "examples": total,
    }


def check(variant: str, comparison: dict[str, Any], against: str) -> dict[str, Any]:
    """Attach the variant's tolerance and verdict; UserError with the numbers when it fails."""
    if variant not in TOLERANCES:
        raise ValueError(
            f"no validation tolerance for variant '{variant}'; add it to validation.TOLERANCES"
        )
    tolerance = TOLERANCES[variant]
    strict = variant in STRICT_PREDICTIONS
    passed = (tolerance is None or comparison["max_abs_diff"] <= tolerance) and (
        not strict or comparison["mismatched_predictions"] == 0
    )
    result = {
        **comparison,
        "variant": variant,
        "against": against,
        "tolerance": tolerance,
        "predictions_must_match": strict,
        "passed": passed,
    }
    if not passed:
        raise UserError(
            f"{variant} validation against {against} failed: max |logit diff| "
            f"{comparison['max_abs_diff']:.3g} (tolerance {tolerance}), "
            f"{comparison['mismatched_predictions']}/{comparison['examples']} predictions differ; "
            "no artifact written"
        )
    return result


def run_session(session, batches: list[dict[str, np.ndarray]]) -> list[Outputs]:
    """Outputs by name for each batch (only the inputs the graph declares are fed)."""
    from asc_deploy.measure.ort_runner import run_logits

    names = [o.name for o in session.get_outputs()]
    results = []
    for batch in batches:
        values = run_logits(session, batch, names)
        results.append(
            {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, values, strict=True)}
        )
    return results
