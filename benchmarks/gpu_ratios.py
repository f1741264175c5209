"""BERT-base latency on CUDA: ONNX Runtime CUDA EP fp32 vs fp16 (IO binding), PyTorch for reference.

The GPU counterpart of `bert_base_ratios.py` (issue 5): random BERT-base weights (BertConfig()
defaults: 12 layers, hidden 768), batch 1 and 8, sequence 128. The ONNX variants are timed by the
project's own harness (`harness.run_bench` -> fresh `worker` processes -> `create_session`'s
provider check, `latency.ort_run_fn`'s IO binding + synchronisation, `memory`'s peak device
memory); PyTorch CUDA eager fp32/fp16 is timed in-process with the same timing loop and a
`torch.cuda.synchronize()` per call.

Two phases, so the (slow) export can run before onnxruntime-gpu is installed:

    python benchmarks/gpu_ratios.py prepare --work /root/gpuwork   # export, optimise, fp16, torch
    python benchmarks/gpu_ratios.py measure --work /root/gpuwork --output OUT.json

`prepare` needs torch (CUDA) + transformers + onnx + onnxruntime (any build: the transformer
optimiser is pure Python); `measure` needs onnxruntime-gpu with working CUDA/cuDNN libraries.
Variants: `fp32` (plain export; ORT applies its own fusions at load), `fp32-optimized`
(onnxruntime.transformers optimiser, use_gpu), `fp16` (optimised, then fp16 with fp32 IO).
Ratios are p50 (median of the rounds' p50s) over ONNX Runtime CUDA fp32's at the same batch.

Export with the project's pinned transformers (4.57.x, constraints.txt): a transformers 5.x export
builds its attention mask in a way the onnxruntime.transformers BERT optimiser does not recognise
(attention fused in 0 of 12 layers, so fp16 barely helps); `prepare` records the version and the
fusion report. On the device used for benchmarks/results/gpu_ratios.json (H100, torch 2.11+cu130,
no network) onnxruntime-gpu 1.31.1 was installed with `pip install --no-deps --target /root/ortgpu`
and found CUDA 13 / cuDNN 9 in torch's nvidia pip packages:

    SP=$(python3 -c 'import site; print(site.getsitepackages()[0])')/nvidia
    export LD_LIBRARY_PATH=$SP/cu13/lib:$SP/cudnn/lib PYTHONPATH=/root/ortgpu:.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asc_deploy.fsutil import write_json_atomic  # noqa: E402

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
BATCHES = (1, 8)
SEQUENCE = 128
LAYERS, HEADS, HIDDEN = 12, 12, 768
ONNX_VARIANTS = ("fp32", "fp32-optimized", "fp16")
BASELINE = "fp32"


def log(msg: str) -> None:
    print(f"[gpu_ratios {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- prepare


def model_paths(work: Path) -> dict[str, Path]:
    return {
        "torch_dir": work / "bert-base-random",
        "fp32": work / "bert-base-fp32.onnx",
        "fp32-optimized": work / "bert-base-fp32-opt-cuda.onnx",
        "fp16": work / "bert-base-fp16-cuda.onnx",
    }


def build_model(attn: str | None = None):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(num_labels=2)
    if attn:
        config._attn_implementation = attn
    return BertForSequenceClassification(config).eval()


def export(model, dest: Path) -> str:
    """TorchScript export (the graph ORT's BERT fusions know); dynamo export if that is gone."""
    import torch

    ids = torch.randint(1000, 2000, (1, SEQUENCE))
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    try:
        torch.onnx.export(
            model,
            args,
            str(dest),
            input_names=INPUT_NAMES,
            output_names=["logits"],
            dynamic_axes={k: {0: "batch", 1: "sequence"} for k in INPUT_NAMES},
            opset_version=17,
            dynamo=False,
        )
        return "torchscript"
    except Exception as exc:  # noqa: BLE001  (recorded, then the other exporter is tried)
        log(f"TorchScript export failed ({type(exc).__name__}: {exc}); trying dynamo=True")
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        torch.onnx.export(
            model,
            args,
            str(dest),
            input_names=INPUT_NAMES,
            output_names=["logits"],
            dynamic_shapes=tuple({0: batch, 1: seq} for _ in INPUT_NAMES),
            opset_version=18,
            dynamo=True,
            external_data=False,
        )
        return "dynamo"


def optimise(paths: dict[str, Path]) -> dict:
    from asc_deploy.deploy.optimize import optimize_graph

    reports = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, fp16 in (("fp32-optimized", False), ("fp16", True)):
            reports[name] = optimize_graph(
                paths["fp32"], paths[name], "bert", HEADS, HIDDEN, LAYERS, target="cuda", fp16=fp16
            )
    reports["warnings"] = sorted({str(w.message) for w in caught})
    return reports


def prepare(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    paths = model_paths(work)
    import transformers

    info: dict = {"transformers": transformers.__version__}
    if int(transformers.__version__.split(".")[0]) >= 5:
        log(f"transformers {transformers.__version__}: attention will likely not fuse; use 4.57.x")
    t0 = time.time()
    model = build_model()
    model.save_pretrained(paths["torch_dir"])
    info["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    info["exporter"] = export(model, paths["fp32"])
    log(f"exported fp32 ({info['exporter']}) in {time.time() - t0:.1f}s")
    info["optimise"] = optimise(paths)
    fused = info["optimise"]["fp16"]["fused_attention"]
    if fused < LAYERS and info["attn_implementation"] != "eager":
        # The optimiser's attention patterns are those of the eager graph; try it before giving up.
        log(f"attention fused in {fused}/{LAYERS} layers with the default attention; trying eager")
        eager = build_model("eager")
        info["exporter"] = export(eager, paths["fp32"])
        retry = optimise(paths)
        info["optimise_default_attention"] = info["optimise"]
        info["optimise"] = retry
        info["attn_implementation"] = "eager"
    log(f"optimised in {time.time() - t0:.1f}s: {json.dumps(info['optimise'], default=str)}")
    info["sizes_bytes"] = {k: p.stat().st_size for k, p in paths.items() if p.is_file()}
    info["torch_cuda"] = measure_torch()
    info["device_memory_probe"] = probe_device_memory()
    write_json_atomic(work / "prepare.json", info)
    return info


def measure_torch(rounds: int = 3, min_seconds: float = 1.0) -> dict:
    """PyTorch CUDA eager fp32 and fp16, same timing loop, synchronised per call."""
    import torch

    from asc_deploy.measure.inputs import fixed_feed
    from asc_deploy.measure.latency import relative_spread, summarize_ms, time_callable

    out = {}
    for dtype_name, dtype in (("torch-fp32", torch.float32), ("torch-fp16", torch.float16)):
        m = build_model().to("cuda", dtype=dtype).eval()
        for batch in BATCHES:
            feed = fixed_feed(INPUT_NAMES, batch, SEQUENCE, m.config.vocab_size)
            tensors = {k: torch.from_numpy(v).to("cuda") for k, v in feed.items()}
            torch.cuda.reset_peak_memory_stats()

            def fn(i, m=m, tensors=tensors):
                with torch.inference_mode():
                    m(**tensors)
                torch.cuda.synchronize()

            round_p50, pooled = [], []
            for _ in range(rounds):
                samples = time_callable(fn, warmup=10, min_iterations=50, min_seconds=min_seconds)
                round_p50.append(summarize_ms(samples)["p50"])
                pooled += samples
            out[f"{dtype_name}|{batch}"] = {
                "variant": dtype_name,
                "batch": batch,
                "sequence": SEQUENCE,
                "latency_ms": {k: round(v, 4) for k, v in summarize_ms(pooled).items()},
                "round_p50_ms": [round(v, 4) for v in round_p50],
                "round_p50_median_ms": round(sorted(round_p50)[len(round_p50) // 2], 4),
                "round_spread": round(relative_spread(round_p50), 4),
                "iterations": len(pooled),
                "peak_device_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "providers_in_use": [f"torch-cuda ({torch.cuda.get_device_name(0)})"],
            }
            log(f"{dtype_name} batch {batch}: p50 {out[f'{dtype_name}|{batch}']['round_p50_ms']}")
        del m
        torch.cuda.empty_cache()
    out["_versions"] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    return out


def probe_device_memory() -> dict:
    """Does nvidia-smi list this process (the harness's peak-device-memory source) here?"""
    import os

    import torch

    from asc_deploy.measure import memory

    x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")  # 256 MiB held
    result = {
        "pid": os.getpid(),
        "gpu_memory_mb_for_pid": memory.gpu_memory_mb(os.getpid()),
    }
    try:
        import subprocess

        result["compute_apps_raw"] = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except Exception as exc:  # noqa: BLE001
        result["compute_apps_raw"] = f"{type(exc).__name__}: {exc}"
    del x
    return result


# ---------------------------------------------------------------- measure


def fidelity(paths: dict[str, Path]) -> dict:
    """Max |logit difference| of each ONNX variant on CUDA vs the fp32 export on CUDA."""
    import numpy as np

    from asc_deploy.measure.inputs import fixed_feed
    from asc_deploy.measure.ort_runner import create_session

    feed = fixed_feed(INPUT_NAMES, 8, SEQUENCE, 30522, seed=1)
    logits = {}
    for name in ONNX_VARIANTS:
        session = create_session(paths[name], provider="cuda")
        logits[name] = session.run(None, feed)[0].astype(np.float64)
    base = logits[BASELINE]
    return {
        name: {
            "max_abs_diff": float(np.abs(v - base).max()),
            "argmax_agreement": float((v.argmax(-1) == base.argmax(-1)).mean()),
        }
        for name, v in logits.items()
        if name != BASELINE
    }


def measure(work: Path, rounds: int, min_seconds: float) -> dict:
    import onnxruntime as ort

    from asc_deploy.measure import harness

    paths = model_paths(work)
    prep = json.loads((work / "prepare.json").read_text())
    log(f"onnxruntime {ort.__version__} from {ort.__file__}: {ort.get_available_providers()}")
    targets = harness.resolve_targets([str(paths[n]) for n in ONNX_VARIANTS])
    for target, name in zip(targets, ONNX_VARIANTS, strict=True):
        target.variant = name
        target.model = "bert-base-random"
    settings = harness.BenchSettings(
        providers=("cuda",),
        batch_sizes=BATCHES,
        sequence_lengths=(SEQUENCE,),
        inputs="fixed",
        intra_op_threads=1,
        inter_op_threads=1,
        warmup=10,
        min_iterations=50,
        min_seconds=min_seconds,
        rounds=rounds,
    )
    doc = harness.run_bench(targets, settings, progress=log)
    torch_rows = {k: v for k, v in prep["torch_cuda"].items() if not k.startswith("_")}
    return {
        "schema": "asc-deploy.gpu-ratios/1",
        "what": (
            "BERT-base random weights (BertConfig() defaults), sequence 128, batch 1 and 8, "
            "ONNX Runtime CUDA EP with IO binding (project harness) vs PyTorch CUDA eager"
        ),
        "onnxruntime": {"version": ort.__version__, "file": ort.__file__},
        "summary": summary(doc, torch_rows),
        "fidelity_vs_onnx_fp32": fidelity(paths),
        "prepare": prep,
        "bench": doc,
    }


def summary(doc: dict, torch_rows: dict) -> dict:
    rows = {}
    for m in doc["measurements"]:
        rows[(m["variant"], m["batch"])] = {
            "p50_ms": m["round_p50_median_ms"],
            "round_p50_ms": m["round_p50_ms"],
            "throughput_per_s": m["throughput_per_s"],
            "peak_device_mb": m["memory_mb"]["peak_device"],
            "providers_in_use": m["providers_in_use"],
            "noisy": m["noisy"],
        }
    for row in torch_rows.values():
        rows[(row["variant"], row["batch"])] = {
            "p50_ms": row["round_p50_median_ms"],
            "round_p50_ms": row["round_p50_ms"],
            "throughput_per_s": round(row["batch"] * 1000 / row["latency_ms"]["mean"], 3),
            "peak_device_mb": row["peak_device_allocated_mb"],
            "providers_in_use": row["providers_in_use"],
            "noisy": row["round_spread"] > 0.10,
        }
    table = {}
    for batch in BATCHES:
        base = rows[(BASELINE, batch)]["p50_ms"]
        table[f"batch{batch}"] = {
            variant: {**r, "ratio_to_ort_cuda_fp32": round(r["p50_ms"] / base, 3)}
            for (variant, b), r in rows.items()
            if b == batch
        }
    return {"table": table, "flags": doc["flags"], "gpu": doc["host"]["gpu"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("prepare", "measure"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/asc-bert-base-gpu"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/gpu_ratios.json")
    args = parser.parse_args()
    t0 = time.time()
    if args.phase == "prepare":
        info = prepare(args.work)
        print(json.dumps(info, indent=1, default=str))
        return
    result = measure(args.work, args.rounds, args.min_seconds)
    result["duration_s"] = round(time.time() - t0, 1)
    write_json_atomic(args.output, result)
    print(json.dumps(result["summary"], indent=1, default=str))
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
