"""Parameter count, FLOPs per example and the longest sequence a graph takes, read from ONNX.

FLOPs are an estimate from the weights alone (no shape inference, so it works on any exported
encoder, fp32 or quantised): every matrix product against a 2-D weight initializer costs
2*K*N multiply-adds per row. In a static int8 (QDQ) graph the weight reaches its MatMul through a
DequantizeLinear node; that node's output counts as the weight. Rows are tokens for MatMul-family
nodes (3-D activations) and one per example for Gemm (the pooler / classifier on the [CLS]
vector). Attention adds the two activation-by-activation products per layer, QK^T and PV:
2 * 2 * S^2 * hidden.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Matrix products whose second operand is a weight, in fp32 and quantised graphs.
PER_TOKEN_MATMULS = {
    "MatMul",
    "MatMulInteger",
    "QLinearMatMul",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "FusedMatMul",
    "MatMulNBits",
}
PER_EXAMPLE_MATMULS = {"Gemm", "QGemm"}


@dataclass(frozen=True)
class GraphStats:
    parameters: int
    per_token_flops: int  # weight products on every token
    per_example_flops: int  # weight products once per example (pooler, classifier)
    attention_products: int  # activation x activation MatMuls (2 per attention layer)
    hidden_size: int | None
    max_positions: int | None  # rows of the position-embedding table, if one is found
    vocab_size: int | None


def graph_stats(model_path: str | Path) -> GraphStats:
    """Read the graph (weights not loaded from external files) and count what it computes."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return stats_from_graph(model.graph)


def stats_from_graph(graph) -> GraphStats:
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    parameters = sum(_prod(d) for d in shapes.values())
    weight_of = {name: name for name in shapes} | _dequantized_weights(graph, shapes)
    per_token = per_example = attention = 0
    k_dims: Counter[int] = Counter()
    for node in graph.node:
        names = [weight_of[i] for i in node.input if i in weight_of]
        names = [n for n in names if len(shapes[n]) == 2]
        weights = [shapes[n] for n in names]
        if node.op_type in PER_TOKEN_MATMULS and weights and _once_per_example(names[0]):
            # Quantisers turn the pooler/classifier Gemm into MatMul: still once per example.
            per_example += 2 * _prod(weights[0])
        elif node.op_type in PER_TOKEN_MATMULS:
            if weights:
                per_token += 2 * _prod(weights[0])
                k_dims[weights[0][0]] += 1
            elif node.op_type in ("MatMul", "FusedMatMul"):
                attention += 1
        elif node.op_type in PER_EXAMPLE_MATMULS and weights:
            per_example += 2 * _prod(weights[0])
    # Q, K, V and output projections take `hidden` inputs, so it is the commonest K.
    hidden = k_dims.most_common(1)[0][0] if k_dims else None
    return GraphStats(
        parameters=parameters,
        per_token_flops=per_token,
        per_example_flops=per_example,
        attention_products=attention,
        hidden_size=hidden,
        max_positions=_embedding_rows(shapes, "position"),
        vocab_size=_embedding_rows(shapes, "word_embeddings"),
    )


def _dequantized_weights(graph, shapes: dict[str, list[int]]) -> dict[str, str]:
    """{DequantizeLinear output: the quantised initializer it dequantises} (QDQ weights)."""
    return {
        node.output[0]: node.input[0]
        for node in graph.node
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in shapes
    }


def flops_per_example(stats: GraphStats, sequence: int) -> int:
    """Estimated FLOPs for one example of `sequence` tokens."""
    attention = stats.attention_products * 2 * sequence * sequence * (stats.hidden_size or 0)
    return stats.per_token_flops * sequence + stats.per_example_flops + attention


def _once_per_example(weight_name: str) -> bool:
    return any(part in weight_name for part in ("pooler", "classifier"))


def _embedding_rows(shapes: dict[str, list[int]], needle: str) -> int | None:
    for name, dims in shapes.items():
        if needle in name and "embedding" in name and len(dims) == 2:
            return int(dims[0])
    return None


def _prod(dims: list[int]) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out
