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

Dropout scaling (``split.piece_scale = "dropout"``): a piece sees |S_{l-1}| of the h_{l-1}
inputs of every neuron of layer l >= 2, so its incoming weights are multiplied by
h_{l-1} / |S_{l-1}| while it trains (inverted dropout) and divided back after recombining.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .config import OUTPUTS, UNHELD
from .model import MLP
from .split import Split

Path = Sequence[int]  # one group per hidden layer

Params = list[torch.Tensor]  # [W_1, b_1, ..., W_out, b_out]


def piece_neurons(split: Split, path: Path) -> list[np.ndarray]:
    """S_l for every hidden layer: the neuron indices the piece keeps."""
    return [np.flatnonzero(np.asarray(a) == g) for a, g in zip(split, path, strict=True)]


def params_of(piece: MLP | Sequence[torch.Tensor]) -> Params:
    """A piece as ``Params`` (an MLP's parameters, detached, or the list itself)."""
    if isinstance(piece, nn.Module):
        return [p.detach() for p in piece.parameters()]
    return list(piece)


def cut(net: MLP, neurons: Sequence[np.ndarray]) -> Params:
    """The parameters of the piece keeping hidden neurons ``neurons`` (copies, not views)."""
    lins = net.linears
    out = []
    with torch.no_grad():
        for m, lin in enumerate(lins):
            W, b = lin.weight.detach(), lin.bias.detach()
            if m < len(lins) - 1:
                rows = torch.as_tensor(neurons[m])
                W, b = W[rows], b[rows]
            if m > 0:
                W = W[:, torch.as_tensor(neurons[m - 1])]
            out += [W.clone(), b.clone()]
    return out


def sizes_of(params: Params) -> list[int]:
    return [params[0].shape[1], *(W.shape[0] for W in params[0::2])]


def as_mlp(params: Params, activation: str) -> MLP:
    """An MLP holding copies of ``params``, built without ``nn.Module.__init__``.

    Module construction (about 0.5 ms for a 3-layer MLP) would cost more than training a small
    piece, so every piece is a structural copy of one template per shape.
    """
    key = (tuple(sizes_of(params)), activation)
    template = _TEMPLATES.get(key)
    if template is None:
        template = _TEMPLATES[key] = MLP(key[0], activation)
    net = _clone_module(template)
    for lin, W, b in zip(net.linears, params[0::2], params[1::2], strict=True):
        lin._parameters["weight"] = nn.Parameter(W.detach().clone())
        lin._parameters["bias"] = nn.Parameter(b.detach().clone())
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
    return as_mlp(cut(net, piece_neurons(split, path)), net.activation)


_F = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


@torch.no_grad()
def forward(params: Params, activation: str, x: torch.Tensor) -> torch.Tensor:
    """The logits of the piece ``params`` (the same ops as ``MLP.forward``)."""
    f = _F[activation]
    n = len(params) // 2
    for m in range(n):
        x = nn.functional.linear(x, params[2 * m], params[2 * m + 1])
        if m < n - 1:
            x = f(x)
    return x


@torch.no_grad()
def ensemble_logits(
    pieces: Sequence[Params], activation: str, x: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """sum_p piece_p(x): the logit-sum ensemble, (n, d_out) (an upper reference: it needs every
    piece at inference time, so it is not one net of the original size)."""
    x = torch.as_tensor(x)
    out = None
    for piece in pieces:
        z = forward(params_of(piece), activation, x)
        out = z if out is None else out + z
    return out


def held_counts(
    net: MLP, split: Split, paths: Sequence[Path]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(c for the weight, n for the bias) of every Linear: how many pieces hold each entry."""
    lins = net.linears
    every = [np.arange(s) for s in net.sizes]
    out = [
        (np.zeros(tuple(l.weight.shape), np.int64), np.zeros(tuple(l.bias.shape), np.int64))
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
    lins = net.linears
    orig = [(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in lins]
    # float64 sums: the mean of identical float32 copies is then exactly that value.
    # numpy index sets, not torch indexing: this runs once per combination (thousands of times)
    sums = [(np.zeros(w.shape), np.zeros(b.shape)) for w, b in orig]
    counts = [(np.zeros(w.shape, np.int64), np.zeros(b.shape, np.int64)) for w, b in orig]
    every = [np.arange(n) for n in net.sizes]
    for path, piece in zip(paths, pieces, strict=True):
        neurons = piece_neurons(split, path)
        params = params_of(piece)
        for m in range(len(lins)):
            rows = neurons[m] if m < len(lins) - 1 else every[m + 1]
            cols = neurons[m - 1] if m > 0 else every[0]
            ix = np.ix_(rows, cols)
            sums[m][0][ix] += params[2 * m].detach().numpy()
            counts[m][0][ix] += 1
            sums[m][1][rows] += params[2 * m + 1].detach().numpy()
            counts[m][1][rows] += 1
    # a structural copy (as_mlp: no Module construction, no deepcopy: both cost more than a
    # small combination's recombining); every parameter is overwritten below
    out = as_mlp(params_of(net), net.activation)
    with torch.no_grad():
        for olin, (w, b), (sw, sb), (cw, cb) in zip(out.linears, orig, sums, counts, strict=True):
            for param, o, s, c in ((olin.weight, w, sw, cw), (olin.bias, b, sb, cb)):
                base = o.copy() if unheld == "pretrained" else np.zeros_like(o)
                held = c > 0
                base[held] = (s[held] / c[held]).astype(o.dtype)
                param.copy_(torch.from_numpy(base))
            if output == "shared-rescale":
                held = cw > 0
                factor = torch.ones_like(olin.weight)
                ratio = (
                    torch.as_tensor(cw, dtype=torch.float64)
                    / torch.as_tensor(cb, dtype=torch.float64).clamp(min=1)[:, None]
                )
                held_t = torch.as_tensor(held)
                factor[held_t] = ratio[held_t].float()
                olin.weight.mul_(factor)
        if output == "rescale":
            k_last = len(np.unique(np.asarray(split[-1])))
            out.linears[-1].weight.mul_(1.0 / k_last)
    return out


def dropout_factors(net: MLP, neurons: Sequence[np.ndarray]) -> list[float]:
    """h_{m-1} / |S_{m-1}| for every Linear m >= 1 of the piece keeping ``neurons``."""
    return [lin.in_features / len(s) for lin, s in zip(net.linears[1:], neurons, strict=True)]


def scale_for_dropout(params: Params, factors: Sequence[float]) -> None:
    """Multiply the piece's incoming weights of Linear m >= 1 by ``factors``, in place."""
    with torch.no_grad():
        for W, f in zip(params[2::2], factors, strict=True):
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
    """A piece's parameters as one float32 vector (Linear by Linear: weight, then bias)."""
    return torch.cat([p.detach().reshape(-1) for p in params_of(params)]).numpy()


def unpack(sizes: Sequence[int], flat: np.ndarray) -> Params:
    """The ``Params`` of an MLP of ``sizes`` from ``pack``'s vector (views into it)."""
    flat = torch.from_numpy(np.asarray(flat, dtype=np.float32))
    n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    if n != flat.numel():
        raise ValueError(
            f"a packed piece of sizes {list(sizes)} has {n} values, got {flat.numel()}"
        )
    out, at = [], 0
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        out += [flat[at : at + a * b].view(b, a), flat[at + a * b : at + a * b + b]]
        at += a * b + b
    return out


def coverage(net: MLP, split: Split, paths: Sequence[Path]) -> list[np.ndarray]:
    """How many pieces hold each hidden-to-hidden weight: a (h_{l+1}, h_l) array per layer."""
    return [w for w, _ in held_counts(net, split, paths)[1:-1]]


def masked_forward(net: MLP, split: Split, path: Path, x: torch.Tensor) -> torch.Tensor:
    """The full net's forward with every hidden neuron outside the path's groups forced to 0."""
    masks = [torch.as_tensor(np.asarray(a) == g) for a, g in zip(split, path, strict=True)]
    layer = 0
    for m in net:
        x = m(x)
        if not isinstance(m, torch.nn.Linear):
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
