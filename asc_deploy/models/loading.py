"""Load an encoder by hub id or local folder, with the head a task needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from asc_deploy.errors import UserError
from asc_deploy.models.adapters import SUPPORTED, adapter_for
from asc_deploy.models.trust import OptIns, check_trusted_folder

Head = Literal["classification", "question-answering", "encoder"]


def _looks_like_path(source: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else with a separator or dot prefix is a path.
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or Path(source).exists()


def load_config(source: str | Path, trust_remote_code: bool = False):
    """The model's config, with clear errors for missing folders and unsupported models."""
    from transformers import AutoConfig

    source = str(source)
    if _looks_like_path(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise UserError(
                f"model folder not found: {folder}; pass a from_pretrained folder or a hub id"
            )
        if not (folder / "config.json").is_file():
            raise UserError(
                f"{folder} is not a model folder (no config.json); pass a from_pretrained folder"
            )
        check_trusted_folder(folder, trust_remote_code)
        source = str(folder)
    trust_remote_code = trust_remote_code or OptIns.trust_remote_code
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if not _looks_like_path(source):
            raise UserError(
                f"'{source}' is not a local folder, and as a hub model id it failed to load "
                f"({str(exc).splitlines()[0]}); check the folder name"
            ) from exc
        raise UserError(
            f"cannot load model config from '{source}': {str(exc).splitlines()[0]}"
        ) from exc
    if getattr(config, "is_decoder", False) or config.model_type not in SUPPORTED:
        raise UserError(
            f"'{source}' is a {config.model_type} model, not a supported encoder; "
            f"supported: {', '.join(SUPPORTED)}"
        )
    return config


def load_tokenizer(source: str | Path, trust_remote_code: bool = False):
    """The tokenizer saved with a model or artifact, or one line saying it is missing."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        # A folder with weights but no tokenizer files fails deep in the loader with
        # "TypeError: stat: path should be string ... not NoneType".
        reason = "no tokenizer files" if isinstance(exc, TypeError) else _first_line(exc)
        raise UserError(
            f"cannot load a tokenizer from '{source}' ({reason}); "
            "save the base model's tokenizer files (tokenizer.json / vocab.txt ...) into it"
        ) from exc


def load_model_and_tokenizer(
    source: str | Path,
    head: Head = "classification",
    num_labels: int | None = None,
    label_names: list[str] | None = None,
    trust_remote_code: bool = False,
):
    """(model in eval mode, tokenizer) from a hub id or a local folder.

    A model saved without a head (e.g. a sentence encoder) gets a freshly initialised one.
    """
    from transformers import (
        AutoModel,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
    )

    config = load_config(source, trust_remote_code)
    adapter_for(config.model_type)
    trust_remote_code = trust_remote_code or OptIns.trust_remote_code
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    if head == "classification":
        names = label_names or [str(i) for i in range(num_labels or config.num_labels)]
        kwargs.update(
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
        )
    if head == "encoder" and _has_optional_pooler(config) and _saved_without_pooler(source):
        # Only hidden states are read here; a fine-tuned classifier's folder has no pooler, and
        # loading one fresh prints "newly initialized ... You should probably TRAIN this model".
        kwargs["add_pooling_layer"] = False
    factory = {
        "classification": AutoModelForSequenceClassification,
        "question-answering": AutoModelForQuestionAnswering,
        "encoder": AutoModel,
    }[head]
    tokenizer = load_tokenizer(source, trust_remote_code)  # before the weights: cheaper
    try:
        model = factory.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot load '{source}': {_weights_hint(str(exc).splitlines()[0])}"
        ) from exc
    return model.eval(), tokenizer


def _has_optional_pooler(config) -> bool:
    """Whether the architecture's bare encoder takes `add_pooling_layer` (BERT, RoBERTa, MPNet)."""
    import inspect

    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        encoder = MODEL_MAPPING[type(config)]
    except KeyError:
        return False
    return "add_pooling_layer" in inspect.signature(encoder.__init__).parameters


def _saved_without_pooler(source: str | Path) -> bool:
    """A local safetensors folder whose weights hold no pooler (a hub id or .bin: unknown)."""
    folder = Path(source)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = list(json.loads(index.read_text())["weight_map"])
    elif (folder / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
            names = list(weights.keys())
    else:
        return False
    return not any(".pooler." in f".{name}" for name in names)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _weights_hint(message: str) -> str:
    """transformers suggests `from_tf=True` for any unreadable .bin; say what really happened."""
    if "Unable to load weights from pytorch checkpoint" in message:
        return (
            "its pytorch_model.bin is not a plain weights file (corrupt, or a pickle with code, "
            "which is never run); re-save the model with safetensors (model.safetensors)"
        )
    return message


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
