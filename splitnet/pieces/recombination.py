"""Recombination: trained pieces back into one net of the original size.

Recombination maps every piece parameter back to its place (``extract``'s index sets S_l). With
c(i, j) the number of pieces holding entry (i, j) of a Linear and n(i) the number holding its row
neuron i:

    held (c > 0)      the mean of the pieces' values
    unheld (c = 0)    the pretrained value (``unheld="pretrained"``) or 0 (``"zero"``)
    output "sum"      logits = sum_g W_out[:, S_g] a_g + mean(b_out)
           "rescale"  W_out / k_L: a straight split with zeroed cross-weights gives exactly the
                      mean of the pieces' logits
           "shared-rescale"  every held weight scaled by c_ij / n(i): each neuron's
                      pre-activation is the MEAN over the pieces holding it of what that piece
                      computes (first layer: factor 1; output: S_g / |P|; hidden layers of
                      alternating / all-paths: 1/S for a neuron fed by S pieces)

A BatchNorm tensor is indexed by its layer's neurons, so it is averaged over the pieces holding
its neuron, as a bias (``norm`` re-estimates a summed net's statistics). Dropout-scaled pieces
(``extract.scale_for_dropout``) are divided back by ``unscale_recombined``. ``recombine_stacked``
is ``recombine`` of many combinations of a plain MLP at once, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..config import OUTPUTS, UNHELD
from ..model import MLP
from ..split import Split
from .extract import piece_neurons
from .layout import GroupPath, Params, as_mlp, layout_of, params_of


def held_counts(
    net: MLP, split: Split, paths: Sequence[GroupPath]
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


def hidden_held_counts(net: MLP, split: Split, paths: Sequence[GroupPath]) -> list[np.ndarray]:
    """How many pieces hold each hidden-to-hidden weight: a (h_{l+1}, h_l) array per layer."""
    return [w for w, _ in held_counts(net, split, paths)[1:-1]]


def recombine(
    net: MLP,
    split: Split,
    paths: Sequence[GroupPath],
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


def unscale_recombined(net: MLP, split: Split, paths: Sequence[GroupPath]) -> None:
    """Divide every held weight of Linear m >= 1 by h_{m-1} / |G(j)| (G(j): column j's group)."""
    counts = held_counts(net, split, paths)
    with torch.no_grad():
        for m, lin in enumerate(net.linears[1:], start=1):
            labels = np.asarray(split[m - 1])
            group_size = np.bincount(labels)[labels]  # (h_{m-1},)
            f = torch.as_tensor(lin.in_features / group_size, dtype=lin.weight.dtype)
            held = torch.as_tensor(counts[m][0] > 0)
            lin.weight[held] = (lin.weight / f[None, :])[held]


def recombine_stacked(
    net: MLP,
    splits: Sequence[Split],
    paths: Sequence[GroupPath],
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
