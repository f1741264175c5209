"""Physical removal of encoder layers.

Removing layer k gives exactly the function of the original model with layer k replaced by the
identity: every encoder here feeds layer i's first output into layer i+1 and nothing else
(position bias, masks and heads are computed outside the layers).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from asc_deploy.errors import UserError
from asc_deploy.models.adapters import adapter_for


def remove_layers(model: nn.Module, layer_indices: Iterable[int]) -> nn.Module:
    """Remove encoder layers given as 0-based indices, in place; returns the model.

    The config's layer count is updated, so `save_pretrained` + `from_pretrained` round-trips with
    no custom code.
    """
    adapter = adapter_for(model.config.model_type)
    layers = adapter.layers(model)
    total = len(layers)
    remove = sorted(set(layer_indices))
    bad = [i for i in remove if not 0 <= i < total]
    if bad:
        raise UserError(
            f"layer indices {bad} are outside 0..{total - 1} for this {total}-layer model"
        )
    if len(remove) >= total:
        raise UserError(f"refusing to remove all {total} encoder layers; keep at least one")
    kept = [layer for i, layer in enumerate(layers) if i not in set(remove)]
    for new_index, layer in enumerate(kept):
        _renumber(layer, new_index)
    adapter.set_layers(model, nn.ModuleList(kept))
    setattr(model.config, adapter.num_layers_key, len(kept))
    return model


def _renumber(layer: nn.Module, index: int) -> None:
    # Some layers carry their own index (for caches); keep it consistent with the new position.
    for module in layer.modules():
        if hasattr(module, "layer_idx"):
            module.layer_idx = index


class IdentityLayer(nn.Module):
    """Stands in for an encoder layer and returns its input: the reference for surgery tests."""

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,)


def replace_with_identity(model: nn.Module, layer_indices: Iterable[int]) -> nn.Module:
    """Replace layers (0-based) by the identity, keeping the layer count: removal's reference."""
    adapter = adapter_for(model.config.model_type)
    layers = adapter.layers(model)
    for i in layer_indices:
        layers[i] = IdentityLayer()
    return model
