"""Pruning of connections (single weights) and of neurons (whole rows), as in the MPI NN slides.

Connections. For a weight matrix W (or all of them, ``scope="global"``) prune the k smallest
``|w_ij|``, ``k = round(amount * n)`` for a float amount (an int is a count), i.e. set them to 0.
The selection is ``torch.topk(|w|, k, largest=False)`` on the same flattened tensor (globally:
the weights concatenated in module order), so the masks equal ``torch.nn.utils.prune``'s
``l1_unstructured`` / ``global_unstructured(L1Unstructured)`` bit for bit, ties included.
``threshold=t`` prunes instead every ``|w| < t``. Biases are never pruned (the slides' ``Ab``).
A zeroed weight still costs a multiply in a dense matmul; ``csr_predictor`` runs the forward
on ``scipy.sparse`` CSR matrices, which skip them (``experiments/pruning/run.py`` times both).

Neurons. Hidden neuron j of layer l is scored by the L2 (or L1) norm of its incoming row
``W_l[j, :]``, or by its mean ``|a_j|`` on data X (``criterion="activity"``); per hidden layer
the ``n_l - round(amount * n_l)`` best are kept with ``torch.topk(largest=True)`` on scores of
the *original* net, which is ``ln_structured(n=2, dim=0)``'s selection on every hidden Linear.
At least one neuron per layer is kept; the output layer is never pruned. Removal is physical:
row j of W_l, entry j of b_l and column j of W_{l+1} are deleted, so the net gets smaller.

Exact semantics. torch's masked neuron has a zero row but keeps its bias, so it outputs the
constant ``c_j = f(b_l[j])`` (relu(b), tanh(b), sigmoid(b) = 0.5 at b = 0). With
``fold_bias=True`` (default) that constant is folded into the next layer,
``b_{l+1} += W_{l+1}[:, j] * c_j``, and the shrunk net computes exactly what torch's masked net
computes. With ``fold_bias=False`` the neuron's contribution is dropped: the shrunk net equals
the full net with the *outgoing* columns ``W_{l+1}[:, j]`` zeroed.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..model import ACTIVATIONS, activation_fn, parse_sequential
from ..sgd import minibatches, sgd

CRITERIA = ("l2", "l1", "activity")
Amount = float | int  # a fraction in [0, 1], or a count
Data = torch.Tensor | np.ndarray


def _n_to_prune(amount: Amount, n: int, what: str) -> int:
    """torch's rule: an int is a count, a float in [0, 1] gives ``round(amount * n)``."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise ValueError(f"{what} amount={amount!r} must be a float in [0, 1] or an int count")
    if isinstance(amount, numbers.Integral):
        if not 0 <= amount <= n:
            raise ValueError(f"{what} amount={amount} must lie in [0, {n}]")
        return int(amount)
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"{what} amount={amount} must lie in [0, 1]")
    return round(amount * n)


def _layers(module: nn.Module) -> list[tuple[int, nn.Linear, str]]:
    """``[(index in the Sequential, linear, activation name), ...]``."""
    idx = [i for i, m in enumerate(module) if isinstance(m, nn.Linear)]
    return [(i, lin, act) for i, (lin, act) in zip(idx, parse_sequential(module), strict=True)]


# -- connections ----------------------------------------------------------------------------


def connection_masks(
    module: nn.Module,
    amount: Amount | None = None,
    scope: str = "layer",
    *,
    threshold: float | None = None,
    include_output: bool = True,
) -> list[torch.Tensor]:
    """One 0/1 mask per Linear weight (the output layer's too, unless ``include_output=False``)."""
    if scope not in ("layer", "global"):
        raise ValueError(f"scope={scope!r} must be 'layer' or 'global'")
    if (amount is None) == (threshold is None):
        raise ValueError(f"give exactly one of amount={amount!r} and threshold={threshold!r}")
    ws = [lin.weight.detach() for _, lin, _ in _layers(module)]
    if not include_output:
        ws = ws[:-1]
    if threshold is not None:
        if threshold < 0:
            raise ValueError(f"threshold={threshold} must be >= 0")
        return [(w.abs() >= threshold).to(w.dtype) for w in ws]
    groups = [ws] if scope == "global" else [[w] for w in ws]
    masks: list[torch.Tensor] = []
    for group in groups:
        flat = torch.cat([w.reshape(-1) for w in group])  # parameters_to_vector order
        mask = torch.ones_like(flat)
        k = _n_to_prune(amount, flat.numel(), "connection")
        if k:
            mask[torch.topk(flat.abs(), k=k, largest=False).indices] = 0
        masks += [
            m.view_as(w) for m, w in zip(mask.split([w.numel() for w in group]), group, strict=True)
        ]
    return masks


def prune_connections(
    module: nn.Module,
    amount: Amount | None = None,
    scope: str = "layer",
    *,
    threshold: float | None = None,
    include_output: bool = True,
    inplace: bool = False,
) -> nn.Module:
    """Zero the smallest |w| (by fraction/count per layer or globally, or below a threshold)."""
    masks = connection_masks(
        module, amount, scope, threshold=threshold, include_output=include_output
    )
    out = module if inplace else copy.deepcopy(module)
    with torch.no_grad():
        for (_, lin, _), mask in zip(_layers(out), masks, strict=False):
            lin.weight.mul_(mask)
    return out


def sparsity(module: nn.Module) -> float:
    """Fraction of Linear weights that are exactly zero."""
    ws = [lin.weight for _, lin, _ in _layers(module)]
    return float(sum((w == 0).sum().item() for w in ws) / sum(w.numel() for w in ws))


# -- neurons --------------------------------------------------------------------------------


def neuron_scores(
    module: nn.Module, criterion: str = "l2", X: Data | None = None
) -> list[torch.Tensor]:
    """A score per neuron of every hidden layer (higher = more important)."""
    layers = _layers(module)[:-1]
    if criterion in ("l2", "l1"):
        p = 2 if criterion == "l2" else 1
        return [torch.norm(lin.weight.detach(), p=p, dim=[1]) for _, lin, _ in layers]
    if criterion != "activity":
        raise ValueError(f"criterion={criterion!r} is not one of {', '.join(CRITERIA)}")
    if X is None:
        raise ValueError("criterion='activity' needs data X")
    a = torch.as_tensor(X, dtype=layers[0][1].weight.dtype)
    scores = []
    with torch.no_grad():
        for _, lin, act in layers:
            a = activation_fn(act)(lin(a))
            scores.append(a.abs().mean(dim=0))
    return scores


def neurons_to_keep(
    module: nn.Module, amount: Amount, criterion: str = "l2", X: Data | None = None
) -> list[torch.Tensor]:
    """Sorted indices of the neurons kept in every hidden layer (``ln_structured``'s choice)."""
    keep = []
    for s in neuron_scores(module, criterion, X):
        n = s.numel()
        k_keep = max(1, n - _n_to_prune(amount, n, "neuron"))  # never empty a layer
        keep.append(torch.topk(s, k=k_keep, largest=True).indices.sort().values)
    return keep


def prune_neurons(
    module: nn.Module,
    amount: Amount,
    criterion: str = "l2",
    *,
    X: Data | None = None,
    fold_bias: bool = True,
    inplace: bool = False,
) -> nn.Module:
    """Physically remove the lowest-scoring neurons of every hidden layer (see module doc)."""
    keep = neurons_to_keep(module, amount, criterion, X)
    out = module if inplace else copy.deepcopy(module)
    layers = _layers(out)
    W = [lin.weight.detach().clone() for _, lin, _ in layers]
    b = [lin.bias.detach().clone() if lin.bias is not None else None for _, lin, _ in layers]
    for l, kept in enumerate(keep):
        gone = torch.ones(W[l].shape[0], dtype=torch.bool)
        gone[kept] = False
        if fold_bias and gone.any():
            # a masked neuron's pre-activation is its *original* bias (its row is zero, so
            # the constants folded in from layer l-1 never reach it)
            lin = layers[l][1]
            pre = (
                lin.bias.detach()[gone] if lin.bias is not None else W[l].new_zeros(int(gone.sum()))
            )
            c = activation_fn(layers[l][2])(pre)  # constant outputs f(b_j)
            if c.any():  # e.g. sigmoid(0) = 0.5
                folded = W[l + 1][:, gone] @ c
                b[l + 1] = folded if b[l + 1] is None else b[l + 1] + folded
        W[l] = W[l][kept]
        b[l] = b[l][kept] if b[l] is not None else None
        W[l + 1] = W[l + 1][:, kept]
    with torch.no_grad():
        for (i, _, _), w, bias in zip(layers, W, b, strict=True):
            new = nn.Linear(
                w.shape[1], w.shape[0], bias=bias is not None, dtype=w.dtype, device=w.device
            )
            new.weight.copy_(w)
            if bias is not None:
                new.bias.copy_(bias)
            out[i] = new
    if hasattr(out, "sizes"):  # splitnet.model.MLP records its sizes
        out.sizes = (W[0].shape[1], *[w.shape[0] for w in W])
    return out


METHODS = ("connections-layer", "connections-global", "neurons-l2", "neurons-activity")


def prune_by(module: nn.Module, method: str, amount: Amount, X: Data | None = None) -> nn.Module:
    """A pruned copy of ``module`` by a named method of ``METHODS``: ``connections-<scope>``
    (``prune_connections``, scope "layer" or "global") or ``neurons-<criterion>``
    (``prune_neurons``; "activity" scores the neurons on ``X``)."""
    kind, _, how = method.partition("-")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    if kind == "connections":
        return prune_connections(module, amount, scope=how)
    return prune_neurons(module, amount, how, X=X if how == "activity" else None)


# -- fine-tuning ----------------------------------------------------------------------------


def finetune(
    module: nn.Module,
    X: Data,
    y: Data,
    *,
    epochs: int = 5,
    lr: float = 0.05,
    batch_size: int = 32,
    seed: int = 0,
) -> nn.Module:
    """Plain SGD on cross-entropy that keeps pruned (exactly zero) weights at zero; in place.

    ``sgd.sgd`` with the 0/1 masks ``w != 0`` on every Linear weight: a zero gradient leaves a
    zero weight at zero (no momentum, no decay), biases train freely.
    """
    X = torch.as_tensor(X, dtype=next(module.parameters()).dtype)
    y = torch.as_tensor(y, dtype=torch.long)
    weights = {
        id(lin.weight): (lin.weight != 0).to(lin.weight.dtype) for _, lin, _ in _layers(module)
    }
    masks = [weights.get(id(p)) for p in module.parameters()]
    sgd(
        module,
        X,
        y,
        minibatches(len(X), batch_size, seed, epochs=epochs) if epochs else [],
        lr=lr,
        grad_masks=masks,
    )
    return module


# -- a sparse forward --------------------------------------------------------------------------


def csr_predictor(module: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The forward of a Linear/activation stack on its weights as CSR matrices, feature-major::

        a_0 = x^T (d_in, B),   a_l = f(W_l a_{l-1} + b_l),   returns a_L (d_out, B)

    equal to ``module(x).T`` up to float rounding; f from ``model.ACTIVATIONS``. Only the
    nonzero weights are multiplied, so pruned connections cost nothing here."""
    by_module = {a.module: a.fn for a in ACTIVATIONS.values()}
    layers: list[tuple[sp.csr_matrix, np.ndarray]] = []
    fns: list[Callable[[torch.Tensor], torch.Tensor] | None] = []
    for m in module:
        if isinstance(m, nn.Linear) and m.bias is not None:
            W, b = m.weight.detach().numpy(), m.bias.detach().numpy()
            layers.append((sp.csr_matrix(W), b[:, None]))
            fns.append(None)
        elif type(m) in by_module and fns and fns[-1] is None:
            fns[-1] = by_module[type(m)]
        else:
            raise ValueError(
                f"csr_predictor takes Linear (with bias) and activation layers, got {m}"
            )

    def predict(xT: np.ndarray) -> np.ndarray:
        a = xT
        for (W, b), f in zip(layers, fns, strict=True):
            a = W @ a + b
            if f is not None:  # torch's f on the array, shared not copied
                a = f(torch.from_numpy(a)).numpy()
        return a

    return predict
