"""int8 (dynamic, static QDQ) and fp16 variants of an artifact.

Traps handled here (see ../shared/docs/toolchain-notes.md):
- quantising a fused (optimised) graph fails with "Unable to find data type for weight_name"
  unless `DefaultTensorType` is FLOAT;
- `quant_pre_process` must skip symbolic shape inference on these graphs;
- fp16 uses onnxruntime.transformers' converter (optimize.optimize_graph), never
  onnxconverter_common.

int8 weights get one scale per output column by default (`per_channel`), and a reduced 7-bit
range only where the ISA needs it; both go into the manifest's settings. The accuracy-aware
`int8-mixed` variant (some layers kept fp32) lives in mixed_precision.py on top of these.
"""

from __future__ import annotations

import logging
import platform
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from asc_deploy.deploy import artifacts, variants
from asc_deploy.errors import UserError
from asc_deploy.manifest import verify_artifact
from asc_deploy.tasks.base import MODEL_INPUT_NAMES, Feature, collate

Isa = Literal["avx2", "avx512", "avx512_vnni", "arm64"]
Calibrator = Literal["minmax", "entropy", "percentile"]
CALIBRATORS: tuple[Calibrator, ...] = ("minmax", "entropy", "percentile")
STATIC_OP_TYPES = ("MatMul", "Gather")

# Instruction-set presets (ONNX Runtime quantisation guidance, as optimum's presets encode it):
# - avx2 / avx512 without VNNI multiply u8 x s8 with VPMADDUBSW, whose 16-bit intermediate can
#   saturate: avx2 uses u8 weights (U8U8, no saturation); avx512 keeps s8 weights and reduces
#   their range to 7 bits, which ORT recommends against the same saturation;
# - avx512_vnni (VPDPBUSD) and arm64 (SDOT/UDOT) have no saturation issue: s8 weights, full range
#   (reduce_range there would only throw away a bit of weight precision).
ISA_PRESETS: dict[str, dict[str, Any]] = {
    "avx2": {"weight_type": "QUInt8", "reduce_range": False},
    "avx512": {"weight_type": "QInt8", "reduce_range": True},
    "avx512_vnni": {"weight_type": "QInt8", "reduce_range": False},
    "arm64": {"weight_type": "QInt8", "reduce_range": False},
}


def int8_settings(isa: Isa, per_channel: bool = True) -> dict[str, Any]:
    """Weight type and range for `isa`, plus the weight-scale granularity.

    Per-channel scales (one per output column) cost nothing at run time and keep accuracy: one
    column with large weights no longer flattens every other column's weights to a few levels.
    """
    return {**ISA_PRESETS[isa], "per_channel": per_channel}


def detect_isa(cpu_flags: set[str] | None = None, machine: str | None = None) -> Isa:
    """The best preset this host's CPU supports (from /proc/cpuinfo flags or the machine name)."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags if cpu_flags is not None else _cpu_flags()
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if {"avx512f", "avx512bw"} <= flags:
        return "avx512"
    return "avx2"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_isa(isa: str = "auto") -> Isa:
    if isa == "auto":
        return detect_isa()
    if isa not in ISA_PRESETS:
        raise UserError(f"unknown instruction set '{isa}'; use auto, {', '.join(ISA_PRESETS)}")
    return isa  # type: ignore[return-value]


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return getattr(QuantType, name)


def _fused_graph_options() -> dict[str, Any]:
    import onnx

    # Fused ops (Attention, SkipLayerNormalization) have no type info for their weights; without
    # this the quantiser stops with "Unable to find data type for weight_name".
    return {"DefaultTensorType": onnx.TensorProto.FLOAT}


def quantize_dynamic_graph(
    src: str | Path,
    dst: str | Path,
    isa: Isa,
    per_channel: bool = True,
    nodes_to_exclude: list[str] | None = None,
    nodes_to_quantize: list[str] | None = None,
) -> dict[str, Any]:
    """Dynamic int8 (weights int8, activations quantised at run time) for `isa`.

    `nodes_to_exclude` stay fp32; `nodes_to_quantize`, when given, are the only int8 nodes.
    """
    from onnxruntime.quantization import quantize_dynamic

    settings = int8_settings(isa, per_channel)
    # ORT logs "consider pre-processing" on the root logger for every call; dynamic int8 needs
    # no calibration shapes, and the variant is validated against its parent anyway.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=_quant_type(settings["weight_type"]),
            per_channel=per_channel,
            reduce_range=settings["reduce_range"],
            nodes_to_quantize=nodes_to_quantize,
            nodes_to_exclude=nodes_to_exclude,
            extra_options=_fused_graph_options(),
        )
    finally:
        root.setLevel(level)
    return {"isa": isa, **settings}


class _FeatureReader:
    """ORT calibration reader over batches of real task features."""

    def __init__(self, batches: list[dict[str, Any]], input_names: list[str]):
        self._batches = iter([{k: b[k] for k in input_names} for b in batches])

    def get_next(self):
        return next(self._batches, None)


def calibration_batches(
    features: list[Feature],
    pad_token_id: int,
    samples: int,
    batch_size: int = 8,
    same_width: bool = False,
) -> list[dict[str, Any]]:
    """Batches of real task inputs. `same_width`: one row per batch, all padded to the longest
    (histogram calibrators stack every batch's activations into one array: shapes must agree)."""
    if not features:
        raise UserError(
            "the calibration set is empty; pass task training data (--calibration-samples > 0)"
        )
    rows = features[:samples]
    if not rows:
        raise UserError(f"calibration size {samples} selects no inputs; use a positive number")
    if same_width:
        batch_size = 1
    batches = [
        collate(rows[i : i + batch_size], pad_token_id) for i in range(0, len(rows), batch_size)
    ]
    if same_width:
        width = max(b["input_ids"].shape[1] for b in batches)
        pads = {"input_ids": pad_token_id}
        batches = [
            {
                k: np.pad(v, ((0, 0), (0, width - v.shape[1])), constant_values=pads.get(k, 0))
                for k, v in b.items()
            }
            for b in batches
        ]
    return batches


def check_calibrator(calibrator: str) -> Calibrator:
    if calibrator not in CALIBRATORS:
        raise UserError(f"unknown calibrator '{calibrator}'; use {', '.join(CALIBRATORS)}")
    return calibrator  # type: ignore[return-value]


def prepare_for_static(src: str | Path, dst: str | Path) -> None:
    """ORT's pre-processing (shape inference, graph clean-up) that static calibration needs."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Symbolic shape inference chokes on these graphs; ONNX shape inference is enough here.
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def quantize_static_graph(
    src: str | Path,
    dst: str | Path,
    batches: list[dict[str, Any]],
    isa: Isa,
    calibrator: Calibrator = "minmax",
    per_channel: bool = True,
    nodes_to_exclude: list[str] | None = None,
    nodes_to_quantize: list[str] | None = None,
    prepared: bool = False,
) -> dict[str, Any]:
    """Static QDQ int8 calibrated on `batches` (u8 activations: s8 ones ran 2x slower on AVX2).

    `prepared`: `src` already went through `prepare_for_static` (the mixed search does it once
    and names nodes from that graph). `nodes_to_exclude` / `nodes_to_quantize` as for dynamic.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[check_calibrator(calibrator)]
    settings = int8_settings(isa, per_channel)
    graph_inputs = [i.name for i in onnx.load(str(src), load_external_data=False).graph.input]
    input_names = [n for n in graph_inputs if n in MODEL_INPUT_NAMES]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(src)
        if not prepared:
            source = Path(tmp) / "prepared.onnx"
            prepare_for_static(src, source)
        quantize_static(
            str(source),
            str(dst),
            _FeatureReader(batches, input_names),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(STATIC_OP_TYPES),  # residual Adds stay fp32 for accuracy
            activation_type=_quant_type("QUInt8"),
            weight_type=_quant_type(settings["weight_type"]),
            per_channel=per_channel,
            reduce_range=settings["reduce_range"],
            nodes_to_quantize=nodes_to_quantize,
            nodes_to_exclude=nodes_to_exclude,
            calibrate_method=method,
            extra_options=_fused_graph_options(),
        )
    return {
        "isa": isa,
        **settings,
        "activation_type": "QUInt8",
        "calibrator": calibrator,
        "calibration_batches": len(batches),
        "calibration_inputs": sum(len(b["input_ids"]) for b in batches),
    }


def quantize_artifact(
    parent_dir: str | Path,
    dest: str | Path,
    mode: Literal["dynamic", "static", "fp16"],
    isa: str = "auto",
    calibration_features: list[Feature] | None = None,
    calibration_samples: int = 128,
    calibrator: Calibrator = "minmax",
    provider: str | None = None,
    reuse: bool = True,
    per_channel: bool = True,
    data: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The int8-dynamic / int8-static / fp16 variant of an artifact, validated against its parent.

    `data` (static: the task and its training data's hash) is recorded in the manifest's settings.

    static needs `calibration_features` (task training inputs, `task.encode(...)`); fp16 is
    optimised for CUDA and validated on `provider` (default: cuda when present, else cpu).
    `per_channel`: one weight scale per output column (int8 modes); the manifest's settings
    record it with the ISA's weight type and reduce_range.
    """
    from asc_deploy.fsutil import hash_json

    parent = verify_artifact(parent_dir)
    artifacts.require_float32_parent(parent, parent_dir, f"quantize --mode {mode}")
    if mode == "dynamic":
        chosen = resolve_isa(isa)
        settings = {"mode": mode, "isa": chosen, **int8_settings(chosen, per_channel)}
        return variants.derive_variant(
            parent_dir,
            dest,
            "int8-dynamic",
            settings,
            lambda s, d: quantize_dynamic_graph(s, d, chosen, per_channel),
            reuse=reuse,
        )
    if mode == "static":
        check_calibrator(calibrator)
        require_fp32_parent(parent, "static int8")
        chosen = resolve_isa(isa)
        batches = calibration_batches(
            calibration_features or [],
            parent.get("pad_token_id") or 0,
            calibration_samples,
            same_width=calibrator != "minmax",
        )
        settings = {
            "mode": mode,
            "isa": chosen,
            **int8_settings(chosen, per_channel),
            "calibrator": calibrator,
            "calibration_samples": calibration_samples,
            "format": "QDQ",
            **({"data": data} if data else {}),
        }
        return variants.derive_variant(
            parent_dir,
            dest,
            "int8-static",
            settings,
            lambda s, d: quantize_static_graph(s, d, batches, chosen, calibrator, per_channel),
            extra_inputs=hash_json(batches),
            reuse=reuse,
        )
    if mode == "fp16":
        return _fp16_artifact(parent_dir, dest, parent["source"], provider, reuse)
    raise UserError(f"unknown quantisation mode '{mode}'; use dynamic, static or fp16")


def require_fp32_parent(parent: dict[str, Any], what: str) -> None:
    if parent["variant"] != "fp32":
        # On fused graphs the calibrator cannot type the fused ops' tensors and silently skips
        # most MatMuls, and fused nodes no longer name their layer; ORT fuses the quantised
        # graph itself at load time anyway.
        raise UserError(
            f"{what} needs the fp32 artifact as its parent, not {parent['variant']}; "
            "pass the exported fp32 folder"
        )


def _fp16_artifact(parent_dir, dest, source: dict[str, Any], provider: str | None, reuse: bool):
    import onnxruntime as ort

    from asc_deploy.deploy.optimize import optimizing_transform

    if provider is None:
        provider = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    settings = {
        "mode": "fp16",
        "converter": "onnxruntime.transformers.float16",
        "optimized_for": "cuda",
        "keep_io_types": True,
    }

    transform = optimizing_transform(source, "cuda", fp16=True)
    return variants.derive_variant(
        parent_dir, dest, "fp16", settings, transform, provider=provider, reuse=reuse
    )
