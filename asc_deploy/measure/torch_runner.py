"""Time a PyTorch model folder in the same harness as the ONNX artifacts (like-with-like ratios).

Variants: eager fp32 ("torch") and PyTorch dynamic int8 of the Linear layers
("torch-dynamic-int8", `torch.ao.quantization.quantize_dynamic`, the paper's quantised baseline).
This is the only measure module that imports torch, and only inside the worker process that
times a torch variant; the ONNX path never reaches it.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from pathlib import Path
from typing import Any

import numpy as np

from asc_deploy.errors import UserError

TORCH_VARIANTS = ("torch", "torch-dynamic-int8")


def load_torch_model(model_dir: str | Path, variant: str = "torch") -> Any:
    """The folder's model in eval mode (its own head class), optionally dynamic-int8 quantised."""
    import transformers

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"PyTorch model folder not found or has no config.json: {model_dir}")
    if variant not in TORCH_VARIANTS:
        raise UserError(f"unknown PyTorch variant '{variant}'; use one of {TORCH_VARIANTS}")
    config = transformers.AutoConfig.from_pretrained(model_dir)
    arch = (config.architectures or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    model = (cls or transformers.AutoModel).from_pretrained(model_dir).eval()
    return quantize_dynamic_int8(model) if variant == "torch-dynamic-int8" else model


def quantize_dynamic_int8(model: Any) -> Any:
    """int8 weights, activations quantised on the fly, in every nn.Linear (the paper's baseline)."""
    import torch

    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def flops_per_example(model: Any, sequence: float) -> int:
    """Linear layers on every token plus QK^T and PV per layer (2 * 2 * S^2 * hidden).

    Works on the fp32 and the quantised model (whose Linear modules keep in/out features); the
    pooler and classifier run once per example, on the [CLS] vector, as in the ONNX estimate.
    """
    per_token = per_example = 0
    for name, module in model.named_modules():
        if hasattr(module, "in_features") and hasattr(module, "out_features"):
            flops = 2 * int(module.in_features) * int(module.out_features)
            if "pooler" in name or "classifier" in name:
                per_example += flops
            else:
                per_token += flops
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", 0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
    return int(per_token * sequence + per_example + layers * 4 * sequence * sequence * hidden)


def model_input_names(model: Any) -> list[str]:
    """The token inputs the model's forward accepts (DistilBERT has no token_type_ids)."""
    params = inspect.signature(model.forward).parameters
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in params]


def torch_run_fn(model: Any, feeds: list[dict[str, np.ndarray]]):
    """A `fn(i)` running the model on feeds[i % len(feeds)] under inference mode."""
    import torch

    tensors = [{k: torch.from_numpy(v) for k, v in feed.items()} for feed in feeds]

    def run(i: int) -> None:
        with torch.inference_mode():
            model(**tensors[i % len(tensors)])

    return run


def set_threads(intra_op: int, inter_op: int) -> None:
    import torch

    torch.set_num_threads(intra_op)
    # Can only be set once, before any parallel work: the worker process is fresh, so it is.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(inter_op)


def serialized_size(model: Any) -> int:
    """Bytes of the state dict as torch.save writes it (the int8 variant's size on disk)."""
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def max_positions(model: Any) -> int | None:
    config = getattr(model, "config", None)
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        return None
    # RoBERTa-style position ids start after the padding index.
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "mpnet"):
        n -= (getattr(config, "pad_token_id", 1) or 1) + 1
    return int(n)
