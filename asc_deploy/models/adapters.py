"""Where each architecture keeps its encoder layers, and how many it declares.

Adapters know *where* layers are; `asc_deploy.compress.strategies` decides *which* to remove.
Adding an architecture is one entry in `ADAPTERS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from asc_deploy.errors import UserError


@dataclass(frozen=True)
class EncoderAdapter:
    model_type: str
    layers_path: str  # attribute path from the base model to its nn.ModuleList of layers
    num_layers_key: str  # the config key that counts them

    def layers(self, model: nn.Module) -> nn.ModuleList:
        module = base_model(model)
        for name in self.layers_path.split("."):
            module = getattr(module, name)
        return module

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        parent_path, _, attr = self.layers_path.rpartition(".")
        parent = base_model(model)
        for name in filter(None, parent_path.split(".")):
            parent = getattr(parent, name)
        setattr(parent, attr, layers)

    def num_layers(self, model: nn.Module) -> int:
        return getattr(model.config, self.num_layers_key)


ADAPTERS: dict[str, EncoderAdapter] = {
    "bert": EncoderAdapter("bert", "encoder.layer", "num_hidden_layers"),
    "roberta": EncoderAdapter("roberta", "encoder.layer", "num_hidden_layers"),
    "xlm-roberta": EncoderAdapter("xlm-roberta", "encoder.layer", "num_hidden_layers"),
    "electra": EncoderAdapter("electra", "encoder.layer", "num_hidden_layers"),
    "mpnet": EncoderAdapter("mpnet", "encoder.layer", "num_hidden_layers"),
    "distilbert": EncoderAdapter("distilbert", "transformer.layer", "n_layers"),
}
SUPPORTED = sorted(ADAPTERS)


def base_model(model: nn.Module) -> nn.Module:
    """The bare encoder inside a model with a head (or the model itself when it has none)."""
    return getattr(model, "base_model", model)


def adapter_for(model_type: str) -> EncoderAdapter:
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise UserError(
            f"architecture '{model_type}' is not supported; "
            f"supported encoders: {', '.join(SUPPORTED)}"
        ) from None
