"""The APC-compressed model in training: a narrow model whose parameters are computed from the
original ones and the projections (`apc.py` states the method and the decisions taken)."""

from __future__ import annotations

import math

import torch
from torch import nn

from asc_deploy.compress.apc import Biases, Shape, Widths, narrow_config
from asc_deploy.compress.width_map import WidthMap, width_map_for


def _key(name: str) -> str:
    return name.replace(".", "/")  # ParameterDict keys may not hold dots


def _modules_of(names):
    """Parameter names grouped by their module ("…dense.weight" -> "…dense")."""
    grouped: dict[str, list[str]] = {}
    for name in names:
        grouped.setdefault(name.rpartition(".")[0], []).append(name)
    return grouped


class ApcModel(nn.Module):
    """The original parameters plus APC's projections; `forward` runs the narrow model with
    parameters computed from both, `finalise` freezes them into the narrow model."""

    def __init__(self, model, widths: Widths, bases: dict, biases: Biases, train_original):
        super().__init__()
        self.width_map: WidthMap = width_map_for(model.config.model_type)
        self.widths = widths
        self.scale = math.sqrt((widths.hidden / widths.heads) / Shape.of(model.config).head_size)
        self.narrow = type(model)(narrow_config(model.config, widths)).eval()
        self.narrow.requires_grad_(False)
        originals = dict(model.named_parameters())
        self.roles = {name: self.width_map.role(name) for name in originals}
        self.original = nn.ParameterDict(
            {_key(n): nn.Parameter(p.detach().clone(), requires_grad=train_original)
             for n, p in originals.items()}
        )  # fmt: skip
        self.U, self.D = nn.ParameterDict(), nn.ParameterDict()
        self.B, self.bU, self.bD = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()
        self.vectors = nn.ParameterDict()
        hidden = bases["hidden"]
        self.P = nn.Parameter(hidden.down.clone())  # embeddings -> the new hidden width
        for module, names in _modules_of(originals).items():
            role = self.roles[names[0]]
            if role.kind == "linear":
                self._add_linear(module, role, bases, biases, originals)
            elif role.kind == "vector":
                for n in names:
                    self.vectors[_key(n)] = nn.Parameter(
                        _weighted_mean(originals[n].detach(), bases[role.site].down)
                    )

    def _add_linear(self, module, role, bases, biases, originals):
        k = _key(module)
        weight = originals[f"{module}.weight"]
        out_features, in_features = weight.shape
        c_in = bases[role.in_site].up.shape[0]
        self.U[k] = nn.Parameter(bases[role.in_site].up.clone())
        c_out = out_features
        if role.out_site is not None:
            self.D[k] = nn.Parameter(bases[role.out_site].down.clone())
            c_out = self.D[k].shape[1]
        if biases == "all":
            self.B[k] = nn.Parameter(weight.new_zeros(c_in, c_out))
        if biases in ("ud", "all"):
            self.bU[k] = nn.Parameter(weight.new_zeros(in_features))
            self.bD[k] = nn.Parameter(weight.new_zeros(c_out))

    def narrow_parameters(self) -> dict:
        """Every parameter of the narrow model, as a differentiable function of this one's."""
        params = {}
        for module, names in _modules_of(self.roles).items():
            role = self.roles[names[0]]
            if role.kind == "linear":
                params.update(self._linear(module, role))
            elif role.kind == "embedding":
                for n in names:
                    params[n] = self.original[_key(n)] @ self.P
            elif role.kind == "vector":
                params.update({n: self.vectors[_key(n)] for n in names})
            else:  # copy
                params.update({n: self.original[_key(n)] for n in names})
        return params

    def _linear(self, module, role) -> dict:
        k = _key(module)
        weight = self.original[_key(f"{module}.weight")]
        bias_key = _key(f"{module}.bias")
        bias = self.original.get(bias_key)
        up = self.U[k]  # (c_in, in)
        w = weight @ up.T  # (out, c_in)
        b = bias
        if k in self.bU:
            shift = weight @ self.bU[k]
            b = shift if b is None else b + shift
        if k in self.D:
            down = self.D[k]  # (out, c_out)
            w = down.T @ w
            b = down.T @ b if b is not None else None
        if k in self.B:
            w = w + self.B[k].T
        if k in self.bD:
            b = self.bD[k] if b is None else b + self.bD[k]
        if role.query:
            w, b = w * self.scale, (b * self.scale if b is not None else None)
        out = {f"{module}.weight": w}
        if b is not None:
            out[f"{module}.bias"] = b
        return out

    def forward(self, **inputs):
        return torch.func.functional_call(
            self.narrow, self.narrow_parameters(), args=(), kwargs=inputs, strict=False
        )

    def finalise(self):
        """The narrow model with these parameters frozen in: a plain Hugging Face model."""
        with torch.no_grad():
            state = {n: p.detach().clone() for n, p in self.narrow_parameters().items()}
        missing, unexpected = self.narrow.load_state_dict(state, strict=False)
        if unexpected or [m for m in missing if not _is_buffer(self.narrow, m)]:
            raise RuntimeError(f"APC finalise: missing {missing}, unexpected {unexpected}")
        self.narrow.requires_grad_(True)
        return self.narrow.eval()


def _is_buffer(model, name: str) -> bool:
    return name in dict(model.named_buffers())


def _weighted_mean(vector, down):
    """Each compressed dimension's mean of the original values, weighted by |down|: a selection
    picks the selected values, k-means averages its group, a rotation averages the dimensions it
    mixes (so LayerNorm's scale starts near the original's whatever the basis)."""
    weights = down.abs()
    return (vector @ weights) / weights.sum(dim=0).clamp_min(1e-12)
