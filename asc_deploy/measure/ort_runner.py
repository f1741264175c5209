"""ONNX Runtime sessions that run on the provider asked for, or fail loudly.

Imports neither torch nor transformers: a target host with only onnxruntime uses this module.
"""

from __future__ import annotations

from pathlib import Path

from asc_deploy.errors import UserError


def resolve_provider(name: str) -> str:
    """ONNX Runtime's provider name for any accepted spelling, checked to be installed here."""
    import onnxruntime as ort

    from asc_deploy.providers import canonical_provider, ort_provider_name

    try:
        short = canonical_provider(name)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    full = ort_provider_name(short)
    available = ort.get_available_providers()
    if full not in available:
        hint = "install onnxruntime-gpu" if short != "cpu" else "reinstall onnxruntime"
        raise UserError(
            f"execution provider '{name}' is not available on this host (available: "
            f"{', '.join(available)}); {hint} or pick one listed"
        )
    return full


def create_session(
    model_path: str | Path,
    provider: str = "cpu",
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = 1,
    graph_optimization: str = "all",
    provider_options: dict | None = None,
):
    """An InferenceSession on `provider`, checked to really use it (no silent CPU fallback)."""
    import onnxruntime as ort

    model_path = Path(model_path)
    if not model_path.is_file():
        raise UserError(
            f"ONNX model not found: {model_path}; pass a model.onnx file or artifact folder"
        )
    full = resolve_provider(provider)
    options = ort.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    if inter_op_threads:
        options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    providers: list = [(full, provider_options or {})]
    if full != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")  # for the few nodes the GPU providers do not cover
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises several unrelated types for unreadable models
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"ONNX model {model_path} failed to load: {first}") from exc
    in_use = session.get_providers()
    if not in_use or in_use[0] != full:
        raise UserError(
            f"requested provider {full} is not in use (session uses {in_use}): its libraries are "
            "missing or incompatible; fix the CUDA/cuDNN/TensorRT install or use provider 'cpu'"
        )
    return session


def session_input_names(session) -> list[str]:
    return [i.name for i in session.get_inputs()]


def run_logits(session, features: dict, output_names: list[str] | None = None) -> list:
    """Run on a dict of numpy arrays, feeding only the inputs the graph declares."""
    names = session_input_names(session)
    feed = {k: features[k] for k in names if k in features}
    missing = [k for k in names if k not in feed]
    if missing:
        raise UserError(
            f"inputs {missing} required by the ONNX graph are missing from the features"
        )
    return session.run(output_names, feed)
