"""Accuracy-aware mixed precision (`int8-mixed`): int8 everywhere except the layers that cost
accuracy, which stay fp32.

1. Sensitivity: the quantisable nodes (weight MatMuls, embedding Gathers; static QDQ also the
   attention MatMuls) are grouped by encoder layer ("layer.3"), plus "embeddings" and "head".
   Each group alone is quantised and the mean KL divergence of the graph's output distribution
   from fp32 is measured on calibration inputs from the *training* split.
2. Search: starting from everything int8, the most sensitive groups are kept in fp32
   (`nodes_to_exclude`) one at a time until the artifact's primary metric on training examples
   reserved from fine-tuning (`task.holdout`) is within `budget` points of the fp32 artifact's.

The evaluation split is never read: `training_slices` is the only place that loads data, and it
asks the task for its training split and its reserve only; calibration and held-out examples are
disjoint. The manifest's `transform` records the sensitivity of every group, the fp32 nodes and the
search path (share of quantisable nodes in fp32 vs held-out metric).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from asc_deploy.deploy import variants
from asc_deploy.deploy.quantize import (
    Calibrator,
    Isa,
    calibration_batches,
    check_calibrator,
    int8_settings,
    prepare_for_static,
    quantize_dynamic_graph,
    quantize_static_graph,
    require_fp32_parent,
    resolve_isa,
)
from asc_deploy.errors import UserError
from asc_deploy.manifest import verify_artifact
from asc_deploy.tasks.base import Example, Feature, Task

MixedBase = Literal["dynamic", "static"]
MIXED_BASES: tuple[MixedBase, ...] = ("dynamic", "static")
Outputs = dict[str, np.ndarray]
_LAYER = re.compile(r"[/.]layers?[._](\d+)[/.]")


@dataclass(frozen=True)
class HeldOut:
    """Labelled training examples the search scores candidates on, with the task's metric."""

    examples: list[Example]
    features: list[Feature]
    metric: str
    score: Callable[[list[Outputs]], float] = field(repr=False)
    # which rows: {"split": "holdout" (never trained on) or "train", "start", "stop"}
    source: dict[str, Any]


def training_slices(
    task: Task, tokenizer, calibration_samples: int, heldout_samples: int
) -> tuple[list[Feature], HeldOut]:
    """Calibration features (the first training rows) and the held-out examples the search
    scores on: the task's reserve (`task.holdout`, never trained on) when it has one.

    A task without a reserve (the `quantize` verb on a model fine-tuned elsewhere, whose training
    data the suite cannot know) scores on the training rows after the calibration ones. Either
    way the evaluation split stays unseen.
    """
    from asc_deploy.tasks.holdout import Reserved

    if calibration_samples < 1 or heldout_samples < 1:
        raise UserError(
            f"calibration ({calibration_samples}) and held-out ({heldout_samples}) sizes must "
            "be positive; set export.calibration_samples and export.mixed_samples >= 1"
        )
    if isinstance(task, Reserved) and task.holdout:
        calibration = task.load_examples("train", calibration_samples)
        heldout = task.held_out(heldout_samples)
        source = {"split": "holdout", "start": 0, "stop": len(heldout)}
    else:
        rows = task.load_examples("train", calibration_samples + heldout_samples)
        calibration, heldout = rows[:calibration_samples], rows[calibration_samples:]
        source = {"split": "train", "start": len(calibration), "stop": len(rows)}
    if not heldout:
        raise UserError(
            f"the training split has {len(calibration)} examples, all used for calibration; "
            "set task.holdout to reserve examples for the int8-mixed search"
        )
    features = task.encode(tokenizer, heldout)

    def score(outputs: list[Outputs]) -> float:
        predictions = task.predictions_from_outputs(heldout, features, outputs)
        return float(task.compute_metrics(heldout, predictions)[task.primary_metric])

    return task.encode(tokenizer, calibration), HeldOut(
        examples=heldout,
        features=features,
        metric=task.primary_metric,
        score=score,
        source=source,
    )


def node_group(name: str, op_type: str = "") -> str:
    """The encoder layer a node belongs to ("layer.3"), else "embeddings" (table look-ups such
    as MPNet's shared relative-position bias) or "head" (pooler, classifier)."""
    if match := _LAYER.search(name):
        return f"layer.{int(match.group(1))}"
    return "embeddings" if "embedding" in name.lower() or op_type == "Gather" else "head"


def quantizable_groups(model_path: str | Path, base: MixedBase) -> dict[str, list[str]]:
    """Node names the quantiser would turn into int8, grouped by `node_group`, in graph order.

    The names are the ones `nodes_to_exclude` matches: dynamic int8 first rewrites each plain
    Gemm (pooler, classifier) into a MatMul named "<gemm>_MatMul" plus an Add, then quantises it.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    groups: dict[str, list[str]] = {}
    for node in graph.node:
        name = node.name
        if node.op_type == "Gather":
            wanted = node.input[0] in weights  # embedding tables, not shape arithmetic
        elif node.op_type == "MatMul":
            # Dynamic int8 quantises only MatMuls with constant weights (MatMulConstBOnly).
            wanted = base == "static" or node.input[1] in weights
        elif node.op_type == "Gemm":
            wanted = base == "dynamic" and node.input[1] in weights and _plain_gemm(node)
            name = f"{node.name}_MatMul"
        else:
            wanted = False
        if wanted:
            groups.setdefault(node_group(node.name, node.op_type), []).append(name)
    if not groups:
        raise UserError(f"{model_path} has no quantisable MatMul or Gather nodes to search over")
    return groups


def _plain_gemm(node) -> bool:
    """A Gemm that ORT's dynamic quantiser rewrites as MatMul (alpha = beta = 1, no transA)."""
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return (
        attrs.get("alpha", 1.0) == 1.0
        and attrs.get("beta", 1.0) == 1.0
        and not attrs.get("transA", 0)
    )


def output_divergence(
    reference: list[Outputs], candidate: list[Outputs], masks: list[np.ndarray]
) -> float:
    """Mean KL(fp32 || candidate) of the softmax over each output's last axis, per row.

    Per-token outputs (QA start/end logits) are softmaxed over the real tokens only.
    """
    from scipy.special import log_softmax

    total, rows = 0.0, 0
    for ref, got, mask in zip(reference, candidate, masks, strict=True):
        for name, r in ref.items():
            r64, g64 = r.astype(np.float64), got[name].astype(np.float64)
            valid = mask.astype(bool) if r.shape == mask.shape else np.ones(r.shape, bool)
            # Padding gets -inf before the softmax and 0 after it, so it adds exactly nothing.
            log_p = np.where(valid, log_softmax(np.where(valid, r64, -np.inf), axis=-1), 0.0)
            log_q = np.where(valid, log_softmax(np.where(valid, g64, -np.inf), axis=-1), 0.0)
            terms = np.where(valid, np.exp(log_p) * (log_p - log_q), 0.0)
            total += float(terms.sum())
            rows += len(r)
    return total / rows if rows else 0.0


@dataclass
class _Search:
    """One mixed-precision search over an fp32 graph (static: already prepared)."""

    graph: Path
    base: MixedBase
    isa: Isa
    per_channel: bool
    calibrator: Calibrator
    batches: list[dict[str, np.ndarray]]
    heldout: HeldOut
    pad_token_id: int
    workdir: Path

    def quantize(self, exclude: list[str] | None = None, only: list[str] | None = None) -> Path:
        """One probe graph; the next probe overwrites it (base-size probes are ~100 MB each)."""
        dst = self.workdir / "probe.onnx"
        if self.base == "dynamic":
            quantize_dynamic_graph(self.graph, dst, self.isa, self.per_channel, exclude, only)
        else:
            quantize_static_graph(
                self.graph,
                dst,
                self.batches,
                self.isa,
                self.calibrator,
                self.per_channel,
                exclude,
                only,
                prepared=True,
            )
        return dst

    def sensitivity(self, groups: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Each group quantised alone: KL from fp32 on calibration inputs, most sensitive first."""
        reference = _outputs(self.graph, self.batches)
        masks = [b["attention_mask"] for b in self.batches]
        rows = [
            {
                "group": group,
                "nodes": len(names),
                "kl": output_divergence(
                    reference, _outputs(self.quantize(only=names), self.batches), masks
                ),
            }
            for group, names in groups.items()
        ]
        return sorted(rows, key=lambda r: -r["kl"])

    def heldout_score(self, model_path: Path) -> float:
        from asc_deploy.deploy.ort_evaluate import onnx_forward
        from asc_deploy.measure.ort_runner import create_session
        from asc_deploy.tasks.evaluation import infer_features

        forward = onnx_forward(create_session(model_path, "cpu"))
        outputs = infer_features(forward, self.heldout.features, 64, self.pad_token_id, False)
        return self.heldout.score(outputs)

    def run(self, dst: Path, budget: float) -> dict[str, Any]:
        """Keep the most sensitive groups fp32 until within `budget`; write the winner to dst."""
        groups = quantizable_groups(self.graph, self.base)
        total = sum(len(names) for names in groups.values())
        ranking = self.sensitivity(groups)
        fp32_score = self.heldout_score(self.graph)
        metric = self.heldout.metric
        path: list[dict[str, Any]] = []
        for kept in range(len(ranking)):
            fp32_groups = [r["group"] for r in ranking[:kept]]
            fp32_nodes = [n for g in fp32_groups for n in groups[g]]
            candidate = self.quantize(exclude=fp32_nodes)
            score = self.heldout_score(candidate)
            step = {
                "fp32_groups": fp32_groups,
                "fp32_node_share": len(fp32_nodes) / total,
                metric: score,
                "drop_points": fp32_score - score,
            }
            path.append(step)
            if fp32_score - score <= budget:
                shutil.copyfile(candidate, dst)
                return {
                    "base": self.base,
                    "isa": self.isa,
                    **int8_settings(self.isa, self.per_channel),
                    **({"calibrator": self.calibrator} if self.base == "static" else {}),
                    "budget_points": budget,
                    "heldout": {**self.heldout.source, "metric": metric, "fp32": fp32_score},
                    "heldout_score": score,
                    "drop_points": fp32_score - score,
                    "sensitivity": ranking,
                    "quantizable_nodes": total,
                    "fp32_groups": fp32_groups,
                    "fp32_nodes": fp32_nodes,
                    "fp32_node_share": step["fp32_node_share"],
                    "search": path,
                }
        raise UserError(
            f"no int8 mix stays within {budget} points of fp32 ({metric} {fp32_score:.2f}) on "
            f"the held-out training slice (only the least sensitive group in int8: "
            f"{path[-1][metric]:.2f}); raise export.int8_budget or deploy the fp32 artifact"
        )


def _outputs(model_path: Path, batches: list[dict[str, np.ndarray]]) -> list[Outputs]:
    from asc_deploy.deploy.validation import run_session
    from asc_deploy.measure.ort_runner import create_session

    return run_session(create_session(model_path, "cpu"), batches)


def check_mixed_request(budget: float, base: str, calibrator: str) -> None:
    """The mistakes a user can make in an int8-mixed request, caught before any work."""
    if not np.isfinite(budget) or budget <= 0:
        raise UserError(
            f"int8 budget {budget} must be a positive number of metric points (e.g. 1.0); "
            "set export.int8_budget / --budget"
        )
    if base not in MIXED_BASES:
        raise UserError(
            f"int8-mixed keeps some nodes fp32 around a {' or '.join(MIXED_BASES)} int8 graph; "
            f"'{base}' is not one (fp16 has its own variant); use dynamic or static"
        )
    check_calibrator(calibrator)


def quantize_mixed_artifact(
    parent_dir: str | Path,
    dest: str | Path,
    calibration_features: list[Feature],
    heldout: HeldOut,
    budget: float,
    base: MixedBase = "dynamic",
    isa: str = "auto",
    per_channel: bool = True,
    calibration_samples: int = 128,
    calibrator: Calibrator = "minmax",
    reuse: bool = True,
    data: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The `int8-mixed` variant of an fp32 artifact: `base` int8 with the layers whose int8
    costs accuracy kept fp32, within `budget` metric points of fp32 on `heldout`; `data` (the
    task and its training data's hash) is recorded in the manifest's settings.

    Build the two data arguments with `training_slices(task, tokenizer, calibration_samples,
    mixed_samples)`; the evaluation split is never an input here.
    """
    from asc_deploy.fsutil import hash_json

    check_mixed_request(budget, base, calibrator)
    parent = verify_artifact(parent_dir)
    require_fp32_parent(parent, "int8-mixed")
    if not heldout.features:
        raise UserError("the held-out training slice is empty; set export.mixed_samples >= 1")
    chosen = resolve_isa(isa)
    pad_token_id = parent.get("pad_token_id") or 0
    batches = calibration_batches(
        calibration_features,
        pad_token_id,
        calibration_samples,
        same_width=base == "static" and calibrator != "minmax",
    )
    settings = {
        "mode": "mixed",
        "base": base,
        "isa": chosen,
        **int8_settings(chosen, per_channel),
        "budget_points": budget,
        "calibration_samples": calibration_samples,
        **({"calibrator": calibrator, "format": "QDQ"} if base == "static" else {}),
        **({"data": data} if data else {}),
    }

    def transform(src: Path, dst: Path) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            graph = src
            if base == "static":
                graph = Path(tmp) / "prepared.onnx"
                prepare_for_static(src, graph)
            search = _Search(
                graph,
                base,
                chosen,
                per_channel,
                calibrator,
                batches,
                heldout,
                pad_token_id,
                Path(tmp),
            )
            return search.run(dst, budget)

    return variants.derive_variant(
        parent_dir,
        dest,
        "int8-mixed",
        settings,
        transform,
        extra_inputs=hash_json(
            {"calibration": batches, "heldout": heldout.examples, "source": heldout.source}
        ),
        reuse=reuse,
    )
