"""Batch-invariant dynamic int8: per-token activation scales instead of ORT's per-tensor ones.

ONNX Runtime's dynamic int8 (`quantize_dynamic`) quantises each MatMul input with
`DynamicQuantizeLinear`: one uint8 scale and zero point for the whole tensor, that is for every
request in the batch and for the padding, so a request's prediction depends on its batch-mates.
ORT 1.31 offers no per-row option (its quantiser's extra_options have none; `MatMulInteger`'s CPU
kernel refuses a per-row `a_zero_point`, although the ONNX spec allows one). This study rewrites
the graph instead: each `DynamicQuantizeLinear` becomes a symmetric int8 quantisation with one
scale per token (max |x| over the hidden axis / 127, no zero point), which `MatMulInteger`
accepts (int8 x int8), and the scale broadcasts through the graph's existing rescaling `Mul`.
A token's int8 values then depend on that token alone.

    .venv/bin/python benchmarks/per_row_int8.py MODEL_FOLDER --data-dir ../shared/data/sst2

MODEL_FOLDER: a model fine-tuned on SST-2 (e.g. a run's models/uncompressed). Prints, for fp32,
ORT's dynamic int8 and the per-token rewrite: accuracy at batch 1 and at batch 64 (arrival
order), the flips between the two, and p50 latency at batch 1 and 32 x 128 tokens. Writes
benchmarks/results/per_row_int8.json. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]  # the exported graphs are opset 17: axes attributes
sys.path.insert(0, str(ROOT))


def per_token_int8(src: Path, dst: Path) -> int:
    """Rewrite each DynamicQuantizeLinear of `src` as per-token symmetric int8; returns how many."""
    model = onnx.load(str(src))
    graph = model.graph
    nodes, rewritten = [], 0
    zero_points = set()
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x, (q, scale, zp) = node.input[0], node.output
        p = f"{node.name or q}_per_token"
        nodes += [
            helper.make_node("Abs", [x], [f"{p}_abs"]),
            helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_max"], axes=[-1], keepdims=1),
            helper.make_node("Div", [f"{p}_max", f"{p}_127"], [f"{p}_raw"]),
            helper.make_node("Max", [f"{p}_raw", f"{p}_eps"], [scale]),  # an all-zero row
            helper.make_node("Div", [x, scale], [f"{p}_x"]),
            helper.make_node("Round", [f"{p}_x"], [f"{p}_r"]),
            helper.make_node("Clip", [f"{p}_r", f"{p}_lo", f"{p}_hi"], [f"{p}_c"]),
            helper.make_node("Cast", [f"{p}_c"], [q], to=TensorProto.INT8),
        ]
        graph.initializer.extend(
            [
                helper.make_tensor(f"{p}_127", TensorProto.FLOAT, [], [127.0]),
                helper.make_tensor(f"{p}_eps", TensorProto.FLOAT, [], [1e-12]),
                helper.make_tensor(f"{p}_lo", TensorProto.FLOAT, [], [-127.0]),
                helper.make_tensor(f"{p}_hi", TensorProto.FLOAT, [], [127.0]),
            ]
        )
        zero_points.add(zp)
        rewritten += 1
    for node in nodes:  # symmetric: MatMulInteger's a_zero_point input goes
        if node.op_type == "MatMulInteger" and len(node.input) > 2 and node.input[2] in zero_points:
            node.input[2] = ""
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return rewritten


def evaluate(session, task, examples, features, pad_id: int, batch: int) -> list[dict]:
    from asc_deploy.deploy.ort_evaluate import onnx_forward
    from asc_deploy.tasks.evaluation import infer_features

    outputs = infer_features(onnx_forward(session), features, batch, pad_id, False, False)
    return task.predictions_from_outputs(examples, features, outputs)


def p50_ms(session, batch: int, seq: int, seconds: float = 3.0) -> float:
    names = [i.name for i in session.get_inputs()]
    feed = {n: np.ones((batch, seq), dtype=np.int64) for n in names}
    for _ in range(3):
        session.run(None, feed)
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 10:
        start = time.perf_counter()
        session.run(None, feed)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/per_row_int8.json")
    args = parser.parse_args()

    import onnxruntime as ort

    from asc_deploy.config import ExportConfig, TaskConfig
    from asc_deploy.models.loading import load_tokenizer
    from asc_deploy.stages.deploy import build_variant, export_model
    from asc_deploy.tasks.evaluation import prediction_flips
    from asc_deploy.tasks.presets import build_task

    task = build_task(TaskConfig(preset="sst2", data_dir=args.data_dir))
    tokenizer = load_tokenizer(args.model)
    examples = task.load_examples("eval")
    features = task.encode(tokenizer, examples)
    pad_id = tokenizer.pad_token_id or 0
    work = Path(tempfile.mkdtemp(prefix="per-row-int8-"))
    settings = ExportConfig(validation_samples=8, sample_inputs=8)
    export_model(args.model, work / "fp32", task, settings)
    build_variant("int8-dynamic", work / "fp32", work / "int8-dynamic", settings, task, tokenizer)
    graphs = {
        "fp32": work / "fp32" / "model.onnx",
        "int8-dynamic": work / "int8-dynamic" / "model.onnx",
        "int8-per-token": work / "per-token.onnx",
    }
    rewritten = per_token_int8(graphs["int8-dynamic"], graphs["int8-per-token"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    rows = {}
    for name, graph in graphs.items():
        # ORT fuses MatMulInteger + Cast + Mul into MatMulIntegerToFloat, whose CPU kernel takes
        # uint8 activations only: the int8 per-token graph runs without that fusion.
        disabled = ["MatMulIntegerToFloatFusion"] if name == "int8-per-token" else []
        session = ort.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
        )
        served = evaluate(session, task, examples, features, pad_id, 1)
        batched = evaluate(session, task, examples, features, pad_id, 64)
        accuracy = [task.compute_metrics(examples, p)["accuracy"] for p in (served, batched)]
        rows[name] = {
            "accuracy_b1": round(accuracy[0], 2),
            "accuracy_b64": round(accuracy[1], 2),
            "flips": prediction_flips(served, batched),
            "p50_ms_1x128": round(p50_ms(session, 1, 128), 3),
            "p50_ms_32x128": round(p50_ms(session, 32, 128), 3),
        }
        print(name, rows[name], flush=True)
    doc = {
        "model": str(args.model),
        "examples": len(examples),
        "threads": args.threads,
        "onnxruntime": ort.__version__,
        "rewritten_nodes": rewritten,
        "rows": rows,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
