"""Pieces: cut the sub-network of a path out of a net, recombine trained pieces, pack for the wire.

A piece's parameters are a list ``[W_1, b_1, ..., W_out, b_out]`` (``Params``, the order of
``MLP.parameters()``). For a split and a path p = (p_1..p_L), S_l = {i : split[l][i] = p_l}; the
piece keeps all inputs and outputs and the neurons S_l of every hidden layer:

    W'_1 = W_1[S_1, :]     b'_1 = b_1[S_1]
    W'_l = W_l[S_l, S_{l-1}]  b'_l = b_l[S_l]                    (l = 2..L)
    W'_out = W_out[:, S_L]    b'_out = b_out

Recombination maps every piece parameter back to its place. With c(i, j) the number of pieces
holding entry (i, j) of a Linear and n(i) the number holding its row neuron i:

    held (c > 0)      the mean of the pieces' values
    unheld (c = 0)    the pretrained value (``unheld="pretrained"``) or 0 (``"zero"``)
    output "sum"      logits = sum_g W_out[:, S_g] a_g + mean(b_out)
           "rescale"  W_out / k_L: a straight split with zeroed cross-weights gives exactly the
                      mean of the pieces' logits
           "shared-rescale"  every held weight scaled by c_ij / n(i): each neuron's
                      pre-activation is the MEAN over the pieces holding it of what that piece
                      computes (first layer: factor 1; output: S_g / |P|; hidden layers of
                      alternating / all-paths: 1/S for a neuron fed by S pieces)

BatchNorm nets (``model.norm = "batch"``): ``Params`` is the net's state in ``state_dict`` order
without ``num_batches_tracked`` (``layout``): ``[W_1, g_1, beta_1, mu_1, var_1, ..., W_out,
mu_out, var_out]``. Every BatchNorm tensor is indexed by its layer's neurons, so a piece keeps
``g_l[S_l], beta_l[S_l], mu_l[S_l], var_l[S_l]`` and all of ``mu_out, var_out``, and recombining
takes the mean over the pieces holding a neuron, as for a bias. A summed net's pre-activations
are not any piece's, so its running statistics are re-estimated on data before it is evaluated
(``inference_net``: ``split.norm_stats = "reestimate"``; ``"average"`` keeps the mean).

Dropout scaling (``split.piece_scale = "dropout"``): a piece sees |S_{l-1}| of the h_{l-1}
inputs of every neuron of layer l >= 2, so its incoming weights are multiplied by
h_{l-1} / |S_{l-1}| while it trains (inverted dropout) and divided back after recombining.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import nn

from .config import OUTPUTS, UNHELD
from .model import MLP, activation_fn
from .split import Split

Path = Sequence[int]  # one group per hidden layer

Params = list[torch.Tensor]  # [W_1, b_1, ..., W_out, b_out] (BatchNorm nets: ``layout``)


@dataclass(frozen=True)
class Entry:
    """One tensor of a net's state: which hidden layer's neurons index its rows and columns."""

    name: str  # its state_dict key
    linear: int  # m: the Linear it belongs to or follows (0-based; L = the output layer)
    kind: str  # "weight", "bias" (Linear); "gamma", "beta", "mean", "var" (BatchNorm)
    rows: int | None  # the hidden layer whose neurons index dim 0 (None: all, the outputs)
    cols: int | None  # the hidden layer indexing dim 1 (Linear weights; None: all inputs)

    @property
    def param(self) -> bool:  # trained by SGD (the rest are running statistics)
        return self.kind in ("weight", "bias", "gamma", "beta")


@cache
def layout(n_linears: int, norm: str = "none") -> tuple[Entry, ...]:
    """The ``Params`` order of an MLP with ``n_linears`` Linear layers (``model.MLP``)."""
    out = []
    L = n_linears - 1  # hidden layers
    for m in range(n_linears):
        rows, cols = (m if m < L else None), (m - 1 if m > 0 else None)
        if norm == "none":  # Sequential: Linear, activation, ...
            out += [Entry(f"{2 * m}.weight", m, "weight", rows, cols)]
            out += [Entry(f"{2 * m}.bias", m, "bias", rows, None)]
        else:  # Linear (no bias), BatchNorm1d (affine-free on the logits), activation, ...
            out += [Entry(f"{3 * m}.weight", m, "weight", rows, cols)]
            bn = f"{3 * m + 1}"
            if m < L:
                out += [Entry(f"{bn}.weight", m, "gamma", rows, None)]
                out += [Entry(f"{bn}.bias", m, "beta", rows, None)]
            out += [Entry(f"{bn}.running_mean", m, "mean", rows, None)]
            out += [Entry(f"{bn}.running_var", m, "var", rows, None)]
    return tuple(out)


def layout_of(net: MLP) -> tuple[Entry, ...]:
    return layout(len(net.sizes) - 1, net.norm)


def shapes(sizes: Sequence[int], norm: str = "none") -> list[tuple[int, ...]]:
    """The shape of every ``Params`` tensor of an MLP of ``sizes``."""
    return [
        (sizes[e.linear + 1], sizes[e.linear]) if e.kind == "weight" else (sizes[e.linear + 1],)
        for e in layout(len(sizes) - 1, norm)
    ]


def n_values(sizes: Sequence[int], norm: str = "none") -> int:
    """How many floats ``pack`` makes of a piece of ``sizes``."""
    return sum(int(np.prod(s)) for s in shapes(sizes, norm))


def piece_neurons(split: Split, path: Path) -> list[np.ndarray]:
    """S_l for every hidden layer: the neuron indices the piece keeps."""
    return [np.flatnonzero(np.asarray(a) == g) for a, g in zip(split, path, strict=True)]


def params_of(piece: MLP | Sequence[torch.Tensor]) -> Params:
    """A piece as ``Params`` (an MLP's state in ``layout`` order, detached, or the list itself)."""
    if isinstance(piece, nn.Module):
        if getattr(piece, "norm", "none") == "none":
            return [p.detach() for p in piece.parameters()]
        return [t.detach() for k, t in piece.state_dict().items() if "num_batches" not in k]
    return list(piece)


def cut(net: MLP, neurons: Sequence[np.ndarray]) -> Params:
    """The ``Params`` of the piece keeping hidden neurons ``neurons`` (copies, not views)."""
    out = []
    index = [torch.as_tensor(s) for s in neurons]
    with torch.no_grad():
        for e, t in zip(layout_of(net), params_of(net), strict=True):
            if e.rows is not None:
                t = t[index[e.rows]]
            if e.cols is not None:
                t = t[:, index[e.cols]]
            out.append(t.clone())
    return out


def sizes_of(params: Params) -> list[int]:
    return [params[0].shape[1], *(W.shape[0] for W in params if W.dim() == 2)]


def as_mlp(params: Params, activation: str, norm: str = "none") -> MLP:
    """An MLP holding copies of ``params``, built without ``nn.Module.__init__``.

    Module construction (about 0.5 ms for a 3-layer MLP) would cost more than training a small
    piece, so every piece is a structural copy of one template per shape.
    """
    key = (tuple(sizes_of(params)), activation, norm)
    template = _TEMPLATES.get(key)
    if template is None:
        # eval mode, as sgd leaves a net: a BatchNorm copy must not normalise (and update its
        # statistics with) the batch of whatever inspects it, e.g. the activations split
        template = _TEMPLATES[key] = MLP(*key).eval()
    net = _clone_module(template)
    if norm == "none":
        for lin, W, b in zip(net.linears, params[0::2], params[1::2], strict=True):
            lin._parameters["weight"] = nn.Parameter(W.detach().clone())
            lin._parameters["bias"] = nn.Parameter(b.detach().clone())
        return net
    for e, t in zip(layout(len(key[0]) - 1, norm), params, strict=True):
        module, name = net._modules[e.name.split(".")[0]], e.name.split(".")[1]
        if e.param:
            module._parameters[name] = nn.Parameter(t.detach().clone())
        else:
            module._buffers[name] = t.detach().clone()
    for bn in net.norms:  # its own counter: the template's must never be shared
        bn._buffers["num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    return net


_TEMPLATES: dict = {}


def _clone_module(mod: nn.Module) -> nn.Module:
    new = mod.__class__.__new__(mod.__class__)
    # every dict/set attribute (parameters, buffers, hooks, submodules) is a new container
    new.__dict__ = {
        k: (v.copy() if isinstance(v, (dict, set)) else v) for k, v in mod.__dict__.items()
    }
    for name, child in mod._modules.items():
        new._modules[name] = _clone_module(child)
    return new


def extract(net: MLP, split: Split, path: Path) -> MLP:
    """The standalone piece of ``net`` for ``path`` (a smaller MLP; a copy, not a view)."""
    return as_mlp(cut(net, piece_neurons(split, path)), net.activation, net.norm)


BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default, used by every MLP


def fold(params: Params, norm: str = "none") -> Params:
    """The plain ``[W, b, ...]`` of the same eval-mode function (BatchNorm folded in)::

        BN(W a) = s * (W a - mu) + beta = (s W) a + (beta - s mu),   s = g / sqrt(var + eps)

    (the logits' BN: g = 1, beta = 0). Computed in float64, so only the final rounding to
    float32 differs from torch's eval-mode BatchNorm. A plain net's list is returned as is.
    """
    if norm == "none":
        return list(params)
    out, state = [], {}
    for e, t in zip(layout(len(sizes_of(params)) - 1, norm), params, strict=True):
        state[e.kind] = t.double()
        if e.kind == "var":  # the last tensor of a layer
            s = state.get("gamma", 1.0) / torch.sqrt(state["var"] + BN_EPS)
            b = state.get("beta", 0.0) - s * state["mean"]
            out += [(s[:, None] * state["weight"]).float(), b.float()]
            state = {}
    return out


@torch.no_grad()
def forward(params: Params, activation: str, x: torch.Tensor, norm: str = "none") -> torch.Tensor:
    """The logits of the piece ``params`` (the same ops as ``MLP.forward`` in eval mode)."""
    f = activation_fn(activation)
    params = fold(params, norm)
    n = len(params) // 2
    for m in range(n):
        x = nn.functional.linear(x, params[2 * m], params[2 * m + 1])
        if m < n - 1:
            x = f(x)
    return x


@torch.no_grad()
def ensemble_logits(
    pieces: Sequence[Params], activation: str, x: torch.Tensor | np.ndarray, norm: str = "none"
) -> torch.Tensor:
    """sum_p piece_p(x): the logit-sum ensemble, (n, d_out) (an upper reference: it needs every
    piece at inference time, so it is not one net of the original size)."""
    x = torch.as_tensor(x)
    out = None
    for piece in pieces:
        z = forward(params_of(piece), activation, x, norm)
        out = z if out is None else out + z
    return out


def held_counts(
    net: MLP, split: Split, paths: Sequence[Path]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(c for the weight, n for the bias) of every Linear: how many pieces hold each entry."""
    lins = net.linears
    every = [np.arange(s) for s in net.sizes]
    out = [
        (np.zeros(tuple(l.weight.shape), np.int64), np.zeros(l.out_features, np.int64))
        for l in lins
    ]
    for path in paths:
        neurons = piece_neurons(split, path)
        for m in range(len(lins)):
            rows = neurons[m] if m < len(lins) - 1 else every[m + 1]
            cols = neurons[m - 1] if m > 0 else every[0]
            out[m][0][np.ix_(rows, cols)] += 1
            out[m][1][rows] += 1
    return out


def recombine(
    net: MLP,
    split: Split,
    paths: Sequence[Path],
    pieces: Sequence[Params | MLP],
    *,
    unheld: str = "pretrained",
    output: str = "sum",
) -> MLP:
    """Assemble trained ``pieces`` (one per path, in order) into a copy of ``net``."""
    if len(paths) != len(pieces):
        raise ValueError(f"{len(paths)} paths but {len(pieces)} pieces")
    if unheld not in UNHELD:
        raise ValueError(f"split.unheld={unheld!r} is not one of {', '.join(UNHELD)}")
    if output not in OUTPUTS:
        raise ValueError(f"split.output={output!r} is not one of {', '.join(OUTPUTS)}")
    lay = layout_of(net)
    orig = [t.numpy() for t in params_of(net)]
    # float64 sums: the mean of identical float32 copies is then exactly that value.
    # numpy index sets, not torch indexing: this runs once per combination (thousands of times)
    sums = [np.zeros(o.shape) for o in orig]
    counts = [np.zeros(o.shape, np.int64) for o in orig]
    every = [np.arange(n) for n in net.sizes]
    for path, piece in zip(paths, pieces, strict=True):
        neurons = piece_neurons(split, path)
        params = params_of(piece)
        for e, t, sm, cn in zip(lay, params, sums, counts, strict=True):
            rows = neurons[e.rows] if e.rows is not None else every[e.linear + 1]
            ix = rows
            if e.kind == "weight":
                ix = np.ix_(rows, neurons[e.cols] if e.cols is not None else every[0])
            sm[ix] += t.detach().numpy()
            cn[ix] += 1
    merged = []
    for o, sm, cn in zip(orig, sums, counts, strict=True):
        base = o.copy() if unheld == "pretrained" else np.zeros_like(o)
        held = cn > 0
        base[held] = (sm[held] / cn[held]).astype(o.dtype)
        merged.append(torch.from_numpy(base))
    # a structural copy (as_mlp: no Module construction, no deepcopy: both cost more than a
    # small combination's recombining)
    out = as_mlp(merged, net.activation, net.norm)
    if output == "shared-rescale":
        with torch.no_grad():
            for olin, (cw, cb) in zip(out.linears, held_counts(net, split, paths), strict=True):
                _shared_rescale(olin.weight, cw, cb)
    if output == "rescale":
        k_last = len(np.unique(np.asarray(split[-1])))
        with torch.no_grad():
            out.linears[-1].weight.mul_(1.0 / k_last)
    return out


def _shared_rescale(weight: torch.Tensor, cw: np.ndarray, cb: np.ndarray) -> None:
    """weight_ij *= c_ij / n(i) where held (c_ij > 0), in place."""
    held = cw > 0
    factor = torch.ones_like(weight)
    ratio = (
        torch.as_tensor(cw, dtype=torch.float64)
        / torch.as_tensor(cb, dtype=torch.float64).clamp(min=1)[:, None]
    )
    held_t = torch.as_tensor(held)
    factor[held_t] = ratio[held_t].float()
    weight.mul_(factor)


def dropout_factors(net: MLP, neurons: Sequence[np.ndarray]) -> list[float]:
    """h_{m-1} / |S_{m-1}| for every Linear m >= 1 of the piece keeping ``neurons``."""
    return [lin.in_features / len(s) for lin, s in zip(net.linears[1:], neurons, strict=True)]


def scale_for_dropout(params: Params, factors: Sequence[float]) -> None:
    """Multiply the piece's incoming weights of Linear m >= 1 by ``factors``, in place."""
    weights = [t for t in params if t.dim() == 2]  # W_1 .. W_out (either layout)
    with torch.no_grad():
        for W, f in zip(weights[1:], factors, strict=True):
            W.mul_(f)


def unscale_recombined(net: MLP, split: Split, paths: Sequence[Path]) -> None:
    """Divide every held weight of Linear m >= 1 by h_{m-1} / |G(j)| (G(j): column j's group)."""
    counts = held_counts(net, split, paths)
    with torch.no_grad():
        for m, lin in enumerate(net.linears[1:], start=1):
            labels = np.asarray(split[m - 1])
            group_size = np.bincount(labels)[labels]  # (h_{m-1},)
            f = torch.as_tensor(lin.in_features / group_size, dtype=lin.weight.dtype)
            held = torch.as_tensor(counts[m][0] > 0)
            lin.weight[held] = (lin.weight / f[None, :])[held]


def n_params(params: Params | nn.Module) -> int:
    return sum(t.numel() for t in params_of(params))


def pack(params: Params | MLP) -> np.ndarray:
    """A piece's ``Params`` as one float32 vector, in ``layout`` order (plain: Linear by Linear,
    weight then bias; BatchNorm: its statistics travel with it)."""
    return torch.cat([p.detach().reshape(-1) for p in params_of(params)]).numpy()


def unpack(sizes: Sequence[int], flat: np.ndarray, norm: str = "none") -> Params:
    """The ``Params`` of an MLP of ``sizes`` from ``pack``'s vector (views into it)."""
    flat = torch.from_numpy(np.asarray(flat, dtype=np.float32))
    n = n_values(sizes, norm)
    if n != flat.numel():
        raise ValueError(
            f"a packed piece of sizes {list(sizes)} has {n} values, got {flat.numel()}"
        )
    out, at = [], 0
    for shape in shapes(sizes, norm):
        size = int(np.prod(shape))
        out.append(flat[at : at + size].view(*shape))
        at += size
    return out


def restat(net: MLP, X: torch.Tensor | np.ndarray) -> MLP:
    """A copy of the BatchNorm ``net`` whose running statistics are those of ``X`` in one batch
    (every layer's mu and unbiased var of its pre-activations on ``X``, the layers before it
    normalised alike); its parameters are unchanged."""
    out = as_mlp(params_of(net), net.activation, net.norm)
    momenta = [bn.momentum for bn in out.norms]
    for bn in out.norms:
        bn.momentum = 1.0  # running = this batch's statistics
    out.train()
    with torch.no_grad():
        out(torch.as_tensor(X))
    for bn, m in zip(out.norms, momenta, strict=True):
        bn.momentum = m
    return out.eval()


def inference_net(net: MLP, X: torch.Tensor | np.ndarray, norm_stats: str) -> MLP:
    """The net to evaluate: a BatchNorm net restat'ed on ``X`` (``norm_stats="reestimate"``),
    else ``net`` itself (a plain net; BatchNorm with the pieces' averaged statistics)."""
    if net.norm == "none" or norm_stats == "average":
        return net
    return restat(net, X)


def coverage(net: MLP, split: Split, paths: Sequence[Path]) -> list[np.ndarray]:
    """How many pieces hold each hidden-to-hidden weight: a (h_{l+1}, h_l) array per layer."""
    return [w for w, _ in held_counts(net, split, paths)[1:-1]]


def masked_forward(net: MLP, split: Split, path: Path, x: torch.Tensor) -> torch.Tensor:
    """The full net's forward with every hidden neuron outside the path's groups forced to 0."""
    masks = [torch.as_tensor(np.asarray(a) == g) for a, g in zip(split, path, strict=True)]
    layer = 0
    for m in net:
        x = m(x)
        if not isinstance(m, (nn.Linear, nn.BatchNorm1d)):  # after every activation
            x = x * masks[layer]
            layer += 1
    return x


def recombine_stacked(
    net: MLP,
    splits: Sequence[Split],
    paths: Sequence[Path],
    pieces: Sequence[Sequence[Params]],
    *,
    unheld: str = "pretrained",
    output: str = "sum",
) -> Params:
    """``recombine`` of C combinations of one plain MLP at once, as stacks: [W_1, b_1, ...] with
    W_m: (C, out, in) and b_m: (C, out); entry c equals ``recombine(net, splits[c], paths,
    pieces[c])`` bit for bit (tests/test_stacked_one_shot.py).

    The same arithmetic, a stack at a time: float64 sums s and counts n, path by path in path
    order (a path's entries are distinct, so each is one IEEE add, as numpy's ``+=``), then
    held = s / n cast to float32, unheld = the pretrained value or 0, and the output rule.
    Combinations whose pieces differ in shape (groups of unequal sizes) are scattered a shape
    class at a time.
    """
    if unheld not in UNHELD:
        raise ValueError(f"split.unheld={unheld!r} is not one of {', '.join(UNHELD)}")
    if output not in OUTPUTS:
        raise ValueError(f"split.output={output!r} is not one of {', '.join(OUTPUTS)}")
    lins = net.linears
    n_lin, C = len(lins), len(splits)
    orig = [t.detach() for lin in lins for t in (lin.weight, lin.bias)]
    if C == 0:
        return [t.new_empty((0, *t.shape)) for t in orig]
    sums = [torch.zeros((C, *t.shape), dtype=torch.float64) for t in orig]
    counts = [torch.zeros((C, *t.shape), dtype=torch.float64) for t in orig]
    # labels[l]: (C, h_l); a path's S_l of every combination by one comparison (piece_neurons)
    labels = [np.stack([np.asarray(s[l]) for s in splits]) for l in range(n_lin - 1)]
    masks = [[labels[l] == g for l, g in enumerate(path)] for path in paths]
    sizes = np.stack([m.sum(1) for ms in masks for m in ms], axis=1)  # (C, paths * L)
    _, klass = np.unique(sizes, axis=0, return_inverse=True)
    every = [torch.arange(n) for n in net.sizes]
    for j in range(klass.max() + 1):
        members = np.flatnonzero(klass.reshape(-1) == j).tolist()
        cs = torch.as_tensor(members)
        for q in range(len(paths)):
            hidden = [  # (members, |S_l|): row-major nonzeros are each row's S_l, ascending
                torch.as_tensor(np.nonzero(m[members])[1].reshape(len(members), -1))
                for m in masks[q]
            ]
            for m in range(n_lin):
                rows = hidden[m] if m < n_lin - 1 else every[m + 1].expand(len(members), -1)
                cols = hidden[m - 1] if m > 0 else every[0].expand(len(members), -1)
                at_w = (cs[:, None, None], rows[:, :, None], cols[:, None, :])
                at_b = (cs[:, None], rows)
                for i, at in ((2 * m, at_w), (2 * m + 1, at_b)):
                    vals = torch.stack([pieces[c][q][i].detach() for c in members])
                    sums[i][at] += vals.double()
                    counts[i][at] += 1
    out = []
    for o, s, n in zip(orig, sums, counts, strict=True):
        base = o.expand_as(s) if unheld == "pretrained" else torch.zeros_like(o).expand_as(s)
        out.append(torch.where(n > 0, (s / n.clamp(min=1)).to(o.dtype), base))
    if output == "shared-rescale":
        for m in range(n_lin):
            cw, cb = counts[2 * m], counts[2 * m + 1]
            ratio = (cw / cb.clamp(min=1)[:, :, None]).float()
            out[2 * m].mul_(torch.where(cw > 0, ratio, torch.ones_like(ratio)))
    if output == "rescale":
        k_last = [len(np.unique(np.asarray(s[-1]))) for s in splits]
        W = out[-2]
        for k in sorted(set(k_last)):
            sel = torch.as_tensor([c for c, kc in enumerate(k_last) if kc == k])
            W[sel] = W[sel].mul_(1.0 / k)
    return out
