"""ONNX Runtime transformer graph optimisation, with proof that attention was fused.

Fusions fail silently (a graph whose pattern the optimiser does not recognise comes back
unchanged), so the fused Attention nodes are counted and compared with the number of layers.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from asc_deploy.deploy import variants
from asc_deploy.errors import UserError

Target = Literal["cpu", "cuda"]
# onnxruntime.transformers' "bert" optimiser covers the BERT family's attention patterns
# (BERT, RoBERTa, ELECTRA, DistilBERT). MPNet's relative-position bias defeats the attention
# pattern match: LayerNorm/Gelu still fuse, attention stays unfused (reported, not fatal).
ORT_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "electra": "bert",
    "distilbert": "bert",
    "mpnet": "bert",
}
FUSED_ATTENTION_OPS = (
    "Attention",
    "MultiHeadAttention",
    "PackedAttention",
    "PackedMultiHeadAttention",
)


class FusionWarning(UserWarning):
    """Fewer fused attention nodes than encoder layers: the optimiser missed some."""


def op_counts(model_path: str | Path) -> Counter:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)


def count_fused_attention(model_path: str | Path) -> int:
    """Number of fused attention nodes (one per layer when fusion worked)."""
    counts = op_counts(model_path)
    return sum(counts[op] for op in FUSED_ATTENTION_OPS)


def fusion_report(model_path: str | Path, expected_layers: int) -> dict[str, Any]:
    """Fused-node counts; warns naming how many layers' attention stayed unfused."""
    counts = op_counts(model_path)
    fused = sum(counts[op] for op in FUSED_ATTENTION_OPS)
    report = {
        "fused_attention": fused,
        "encoder_layers": expected_layers,
        "unfused_attention_layers": max(0, expected_layers - fused),
        "fused_ops": {
            op: counts[op]
            for op in (
                *FUSED_ATTENTION_OPS,
                "SkipLayerNormalization",
                "EmbedLayerNormalization",
                "BiasGelu",
                "FastGelu",
                "LayerNormalization",
                "Gelu",
            )
            if counts[op]
        },
    }
    if fused < expected_layers:
        warnings.warn(
            f"attention fused in {fused} of {expected_layers} layers: {expected_layers - fused} "
            "layer(s) unfused (the optimiser did not recognise their pattern); the graph is still "
            "correct but runs the unfused attention",
            FusionWarning,
            stacklevel=2,
        )
    return report


def ort_model_type(hf_model_type: str) -> str:
    try:
        return ORT_MODEL_TYPES[hf_model_type]
    except KeyError:
        raise UserError(
            f"no ONNX Runtime optimiser for '{hf_model_type}'; "
            f"supported: {', '.join(ORT_MODEL_TYPES)}"
        ) from None


def optimize_graph(
    src: str | Path,
    dst: str | Path,
    hf_model_type: str,
    num_heads: int,
    hidden_size: int,
    expected_layers: int,
    target: Target = "cpu",
    fp16: bool = False,
) -> dict[str, Any]:
    """Run the transformer optimiser (then fp16 conversion for CUDA); returns the fusion report."""
    from onnxruntime.transformers.optimizer import optimize_model

    if fp16 and target != "cuda":
        raise UserError("fp16 graphs are for the CUDA target; use target cuda (or int8 for CPU)")
    model = optimize_model(
        str(src),
        model_type=ort_model_type(hf_model_type),
        num_heads=num_heads,
        hidden_size=hidden_size,
        # 0 = only the Python fusions: the graph stays portable across execution providers and
        # ORT applies its own provider-specific fusions at load time.
        opt_level=0,
        use_gpu=target == "cuda",
    )
    if fp16:
        # onnxruntime.transformers' converter, not onnxconverter_common (its BERT graphs do not
        # load); keep int64 ids and fp32 logits at the boundary so clients need no change.
        model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst))
    return fusion_report(dst, expected_layers) | {"target": target, "fp16": fp16}


def optimize_artifact(
    parent_dir: str | Path,
    dest: str | Path,
    target: Target = "cpu",
    reuse: bool = True,
) -> dict[str, Any]:
    """The `optimized` variant of an artifact for `target`, validated against its parent."""
    from asc_deploy.deploy.artifacts import require_float32_parent
    from asc_deploy.manifest import verify_artifact

    parent = verify_artifact(parent_dir)
    require_float32_parent(parent, parent_dir, "optimize")
    source = parent["source"]
    settings = {
        "optimizer": "onnxruntime.transformers.optimizer",
        "target": target,
        "opt_level": 0,
        "model_type": ort_model_type(source["model_type"]),
    }

    transform = optimizing_transform(source, target)
    return variants.derive_variant(parent_dir, dest, "optimized", settings, transform, reuse=reuse)


def optimizing_transform(source: dict[str, Any], target: Target, fp16: bool = False):
    """(src, dst) -> facts: `optimize_graph` with the shapes of the artifact's source model."""

    def transform(src: Path, dst: Path) -> dict[str, Any]:
        return optimize_graph(
            src,
            dst,
            source["model_type"],
            source["num_attention_heads"],
            source["hidden_size"],
            source["encoder_layers"],
            target=target,
            fp16=fp16,
        )

    return transform
