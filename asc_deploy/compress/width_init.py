"""APC's starting projections: one basis per width site, from a sample of training batches.

A basis of a site of width n compressed to c is a pair `down` (n × c) and `up` (c × n): `down`
starts every layer's `D` writing the site, `up` every layer's `U` reading it. The paper's
initialisations (apc-method.md), each setting the biases and `B` to zero:
- `sensitivity` (the default, the paper's best): the c most important neurons, importance being
  the accumulated |gradient| of a mask on the site's activations under the task loss
  (Michel et al.'s head importance, per neuron); `up = downᵀ`. At step 0 this is structured pruning.
- `kmeans`: the site's dimensions clustered by their activation profiles into c groups; `down`
  averages a group, `up` copies the average back to every member.
- `svd` (reconstructive): the top-c right singular vectors of the site's activations; `up = downᵀ`,
  the least-squares reconstruction of the activations through c dimensions.
- `random`: N(0, 1e-6) entries, as the paper's random baseline.
Attention sites are per head: the kept heads are the most important ones (random: a seeded draw),
and each kept head gets its own basis, so the projections stay block-diagonal and heads never mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from asc_deploy.compress.apc import Shape, Widths
from asc_deploy.compress.width_map import Taps

MAX_ROWS = 4096  # activation rows kept per site for k-means / SVD


@dataclass
class Basis:
    down: torch.Tensor  # (n, c)
    up: torch.Tensor  # (c, n)
    heads: list[int] | None = None  # attention sites: the original heads kept, in order


@dataclass
class SiteSample:
    importance: dict[str, torch.Tensor]  # site -> (n,) accumulated |mask gradient|
    activations: dict[str, torch.Tensor]  # site -> (rows, n), real tokens only


def sample_sites(model, taps: Taps, batches, want_activations: bool, seed: int = 0) -> SiteSample:
    """One pass of task-loss backward over `batches` with a unit mask on every site."""
    shape = Shape.of(model.config)
    layers = model.config.num_hidden_layers
    widths = {"hidden": shape.hidden, "pooler": shape.hidden, "head": shape.hidden}
    widths |= {f"attn.{i}": shape.hidden for i in range(layers)}
    widths |= {f"ffn.{i}": shape.ffn for i in range(layers)}
    masks = {s: torch.ones(n, requires_grad=True) for s, n in widths.items()}
    importance = {s: torch.zeros(n) for s, n in widths.items()}
    rows: dict[str, list[torch.Tensor]] = {s: [] for s in widths}
    generator = torch.Generator().manual_seed(seed)
    state: dict = {}

    def keep(site: str, x: torch.Tensor) -> None:
        if not want_activations:
            return
        flat = x.detach()
        if flat.dim() == 3:  # (batch, tokens, n): real tokens only
            flat = flat[state["mask"].bool()]
        take = torch.randperm(flat.shape[0], generator=generator)[: MAX_ROWS // 8]
        rows[site].append(flat[take])

    def masked(site: str, x: torch.Tensor) -> torch.Tensor:
        keep(site, x)
        return x * masks[site]

    handles = _install(model, taps, layers, masked)
    model.eval()  # importance of the trained model, no dropout noise
    try:
        for batch in batches:
            state["mask"] = batch["attention_mask"]
            for m in masks.values():
                m.grad = None
            out = model(**batch)
            out.loss.backward()
            for site, m in masks.items():
                if m.grad is not None:
                    importance[site] += m.grad.abs()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    activations = {s: torch.cat(r)[:MAX_ROWS] for s, r in rows.items() if r}
    return SiteSample(importance, activations)


def _install(model, taps: Taps, layers: int, masked) -> list:
    modules = dict(model.named_modules())
    handles = []

    def on_output(site):
        def hook(_module, _args, output):
            if isinstance(output, tuple):
                return (masked(site, output[0]), *output[1:])
            return masked(site, output)

        return hook

    def on_input(site):
        def hook(_module, args):
            return (masked(site, args[0]), *args[1:])

        return hook

    handles.append(modules[taps.embeddings].register_forward_hook(on_output("hidden")))
    for i in range(layers):
        layer = modules[taps.layer.format(i=i)]
        handles.append(layer.register_forward_hook(on_output("hidden")))
        context = modules[taps.attention_context.format(i=i)]
        handles.append(context.register_forward_pre_hook(on_input(f"attn.{i}")))
        ffn = modules[taps.ffn_activation.format(i=i)]
        handles.append(ffn.register_forward_pre_hook(on_input(f"ffn.{i}")))
    if taps.pooler and taps.pooler in modules:
        handles.append(modules[taps.pooler].register_forward_hook(on_output("pooler")))
    if taps.head_hidden and taps.head_hidden in modules:
        handles.append(modules[taps.head_hidden].register_forward_pre_hook(on_input("head")))
    return handles


def build_bases(sample: SiteSample, config, widths: Widths, init: str, seed: int = 0) -> dict:
    """A basis for every site of the model (`hidden`, `pooler`, `head`, `attn.<i>`, `ffn.<i>`)."""
    shape = Shape.of(config)
    rng = np.random.default_rng(seed)
    bases: dict[str, Basis] = {}
    for site, importance in sample.importance.items():
        acts = sample.activations.get(site)
        if site.startswith("attn."):
            bases[site] = _attention_basis(importance, acts, shape, widths, init, rng)
        else:
            c = widths.ffn if site.startswith("ffn.") else widths.hidden
            bases[site] = _basis(importance, acts, c, init, rng)
    return bases


def _basis(importance: torch.Tensor, acts, c: int, init: str, rng) -> Basis:
    n = importance.shape[0]
    if c == n and init != "random":
        eye = torch.eye(n)
        return Basis(eye, eye.clone())
    if init == "sensitivity" or (acts is None and init in ("kmeans", "svd")):
        # A site that saw no activations (an unused pooler) falls back to a selection.
        keep = torch.sort(torch.topk(importance, c, sorted=False).indices).values
        down = torch.zeros(n, c)
        down[keep, torch.arange(c)] = 1.0
        return Basis(down, down.T.clone())
    if init == "kmeans":
        return _kmeans(acts, c, rng)
    if init == "svd":
        # full_matrices: a site with fewer sampled rows than c still gets c orthonormal columns
        _, _, vt = torch.linalg.svd(acts.double(), full_matrices=True)
        down = vt[:c].T.float().contiguous()
        return Basis(down, down.T.clone())
    down = torch.from_numpy(rng.normal(0.0, 1e-3, (n, c))).float()
    up = torch.from_numpy(rng.normal(0.0, 1e-3, (c, n))).float()
    return Basis(down, up)


def _kmeans(acts: torch.Tensor, c: int, rng) -> Basis:
    from sklearn.cluster import KMeans

    profiles = acts.T.double().numpy()  # one row per dimension of the site
    labels = KMeans(c, n_init=3, random_state=int(rng.integers(1 << 31))).fit(profiles).labels_
    n = profiles.shape[0]
    up = torch.zeros(c, n)
    up[torch.from_numpy(labels).long(), torch.arange(n)] = 1.0  # copy the average back
    down = up.T / up.sum(dim=1).clamp_min(1.0)  # average each group
    return Basis(down.contiguous(), up)


def _attention_basis(importance, acts, shape: Shape, widths: Widths, init: str, rng) -> Basis:
    """Block-diagonal: the kept heads, each compressed from the head size to the new one."""
    per_head = importance.reshape(shape.heads, shape.head_size)
    if init == "random":
        heads = sorted(rng.choice(shape.heads, widths.heads, replace=False).tolist())
    else:
        heads = sorted(torch.topk(per_head.sum(dim=1), widths.heads).indices.tolist())
    c = widths.hidden // widths.heads
    n = shape.hidden
    down, up = torch.zeros(n, widths.hidden), torch.zeros(widths.hidden, n)
    for slot, head in enumerate(heads):
        cols = slice(head * shape.head_size, (head + 1) * shape.head_size)
        head_acts = acts[:, cols] if acts is not None else None
        basis = _basis(per_head[head], head_acts, c, init, rng)
        new = slice(slot * c, (slot + 1) * c)
        down[cols, new] = basis.down
        up[new, cols] = basis.up
    return Basis(down, up, heads)
