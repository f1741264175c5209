"""Per-variant validation tolerances (asc_deploy/deploy/validation.py) on real artifacts.

Every variant an export can build has an explicit tolerance; a variant without one is refused
rather than passed unchecked. An int8-mixed artifact (a real graph: its most sensitive group
kept fp32, the rest int8) validates against its fp32 parent, itself validated against PyTorch,
under the int8-mixed entry, and the difference it records is the one its graph really has.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest
from deploy_helpers import SENTENCES, export_tiny, features_for

from asc_deploy.config import ExportConfig
from asc_deploy.deploy import artifacts, validation
from asc_deploy.deploy.mixed_precision import HeldOut, quantize_mixed_artifact
from asc_deploy.manifest import MODEL_FILE
from asc_deploy.measure.ort_runner import create_session


def _comparison(max_abs_diff: float, mismatched: int = 0) -> dict:
    return {
        "max_abs_diff": max_abs_diff,
        "prediction_agreement": 1 - mismatched / 10,
        "mismatched_predictions": mismatched,
        "examples": 10,
    }


def test_every_variant_an_export_builds_has_a_tolerance():
    (variant_type,) = typing.get_args(ExportConfig.model_fields["variants"].annotation)
    buildable = set(typing.get_args(variant_type))
    assert "int8-mixed" in buildable
    assert buildable <= set(validation.TOLERANCES)


def test_a_variant_without_a_tolerance_is_refused_not_passed():
    with pytest.raises(ValueError, match="no validation tolerance for variant 'int8-typo'"):
        validation.check("int8-typo", _comparison(0.0), against="fp32 onnx")


def test_int8_mixed_is_judged_as_its_int8_base():
    # No logit bound and no prediction match, as int8-dynamic and int8-static: a large logit
    # difference and flipped predictions are recorded, and judged by task accuracy instead.
    for variant in ("int8-dynamic", "int8-static", "int8-mixed"):
        result = validation.check(variant, _comparison(3.5, mismatched=2), against="fp32 onnx")
        assert result["passed"] and result["tolerance"] is None
        assert not result["predictions_must_match"]
        assert result["mismatched_predictions"] == 2
    # The exact variants still fail on the same numbers.
    with pytest.raises(Exception, match="optimized validation against fp32 onnx failed"):
        validation.check("optimized", _comparison(3.5, mismatched=2), against="fp32 onnx")


def _scripted_heldout(features, scores: list[float]) -> HeldOut:
    """A held-out slice whose scores come in the order the search asks for them: the fp32
    graph, everything int8, then with the most sensitive group kept fp32 (and so on)."""
    calls = iter(scores)
    return HeldOut(
        examples=[{"id": str(i), "text": s} for i, s in enumerate(SENTENCES)],
        features=features,
        metric="accuracy",
        score=lambda outputs: next(calls),
        source={"split": "train", "start": 0, "stop": len(features)},
    )


def test_a_mixed_artifact_validates_against_pytorch_within_its_tolerance(tiny_model_dir, tmp_path):
    model_dir, fp32, parent = export_tiny(tiny_model_dir, tmp_path)
    # The parent: checked against PyTorch, exactly (1e-4, identical predictions).
    assert parent["validation"]["against"] == "pytorch" and parent["validation"]["passed"]
    assert parent["validation"]["max_abs_diff"] <= validation.TOLERANCES["fp32"]

    features = features_for(model_dir, "classification")
    # All-int8 loses 10 points, one fp32 group brings it back: a real mix of fp32 and int8.
    heldout = _scripted_heldout(features, [100.0, 90.0, 100.0])
    dest = fp32.parent / "int8-mixed"
    mixed = quantize_mixed_artifact(
        fp32, dest, features, heldout, budget=1.0, isa="avx512_vnni", calibration_samples=10
    )
    transform = mixed["transform"]
    assert len(transform["fp32_groups"]) == 1 and 0 < transform["fp32_node_share"] < 1

    result = mixed["validation"]
    assert result["variant"] == "int8-mixed" and result["against"] == "fp32 onnx"
    assert result["tolerance"] == validation.TOLERANCES["int8-mixed"]
    assert result["passed"] and result["examples"] == len(SENTENCES)
    assert mixed["parent"]["validation"] == parent["validation"]  # the chain back to PyTorch

    # The recorded difference is the mixed graph's own against fp32, on the same sample inputs.
    batches = artifacts.sample_batches(artifacts.load_sample_inputs(fp32), batch_size=8)
    masks = [b["attention_mask"] for b in batches]
    outputs = {
        folder: validation.run_session(create_session(folder / MODEL_FILE), batches)
        for folder in (fp32, dest)
    }
    again = validation.compare_outputs(outputs[fp32], outputs[dest], masks)
    assert again["max_abs_diff"] > 0  # int8 really moved the logits
    assert result["max_abs_diff"] == pytest.approx(again["max_abs_diff"], rel=1e-6)
    assert result["mismatched_predictions"] == again["mismatched_predictions"]
    assert np.isfinite(result["max_abs_diff"])
