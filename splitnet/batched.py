"""The batched engine's kernel: train P same-shape pieces as one computation (``sgd``'s twin).

A *stack* holds P pieces of equal sizes [d, h_1..h_L, C] as W_l: (P, h_l, h_{l-1}) and
b_l: (P, h_l). One SGD step on minibatch rows ``idx``::

    a_0 = X[idx]                  (B, d) with a shared order, (P, B, d) with one order per piece
    z_l = W_l a_{l-1} + b_l       (P, h_l, B)    columns are samples (the column layout);
                                                 layer 1, shared a_0: one (P*h_1, d)x(d, B) GEMM
    a_l = f(z_l),  logits = z_{L+1}  (P, C, B)
    g_{L+1} = (softmax(logits) - onehot(y)) / B       = d(sum_p CE_p) / d logits
    dW_l = g_l a_{l-1}^T,  db_l = sum_B g_l,  g_{l-1} = (W_l^T g_l) * f'(a_{l-1})
    buf = momentum * buf + dW  (first step buf = dW),  W -= lr * buf          (= torch.optim.SGD)

The stack's loss is the sum over pieces of each piece's mean cross-entropy, so every piece gets
exactly its own gradient and the result equals ``sgd.sgd`` per piece up to float rounding
(tests/test_engines.py). The backward is written out with bmm: for nets of a few neurons
autograd's bookkeeping would cost more than the arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .model import MLP

# A shared-order stack runs layer 1 as one (B, d) x (d, P*h_1) GEMM. MKL computes a column the same
# way whatever the other columns, except for very narrow products (P*h_1 <= 8 here), which take
# another kernel; small stacks are padded to MIN_COLUMNS so a piece's result never depends on its
# stack-mates (rows are identical on any number of ranks).
MIN_COLUMNS = 64


def stack_params(net: MLP, neurons: Sequence[Sequence[np.ndarray]]) -> tuple[list, list]:
    """Ws, bs of the pieces whose hidden neurons are ``neurons[p] = [S_1, .., S_L]`` (same sizes).

    The slicing of ``pieces.cut``: W_1[S_1, :], W_l[S_l, S_{l-1}], W_out[:, S_L], b_l[S_l].
    """
    lins = net.linears
    idx = [torch.as_tensor(np.stack([n[l] for n in neurons])) for l in range(len(lins) - 1)]
    Ws, bs = [], []
    with torch.no_grad():
        for m, lin in enumerate(lins):
            W, b = lin.weight.detach(), lin.bias.detach()
            rows = idx[m] if m < len(idx) else None  # (P, h_m)
            cols = idx[m - 1] if m > 0 else None
            if rows is not None and cols is not None:
                Ws.append(W[rows[:, :, None], cols[:, None, :]])  # (P, h_m, h_{m-1})
            elif rows is not None:
                Ws.append(W[rows])  # (P, h_1, d)
            else:
                Ws.append(W[:, cols].permute(1, 0, 2).contiguous())  # (P, C, h_L)
            bs.append(b[rows] if rows is not None else b.expand(len(neurons), -1).clone())
    return Ws, bs


def _act(name: str) -> tuple[Callable, Callable]:
    """(f, f' expressed through a = f(z)), the same formulas as torch's backward."""
    if name == "relu":
        return torch.relu, lambda a: a > 0
    if name == "tanh":
        return torch.tanh, lambda a: 1 - a * a
    if name == "sigmoid":
        return torch.sigmoid, lambda a: (1 - a) * a
    raise ValueError(f"activation={name!r} is not one of relu, tanh, sigmoid")


def train_stack(
    Ws: list[torch.Tensor],
    bs: list[torch.Tensor],
    X: torch.Tensor,
    y: torch.Tensor,
    batches: Sequence[torch.Tensor],
    *,
    lr: float,
    momentum: float,
    activation: str,
    buffers: tuple[list, list] | None = None,
) -> tuple[list, list] | None:
    """Train the stack (Ws, bs) in place; returns the momentum buffers (None without momentum).

    ``batches``: minibatch row indices per step, (B,) for a shared order or (P, B) per piece.
    ``buffers``: (W buffers, b buffers) to start from (a zero buffer = a fresh optimizer).
    """
    f, df = _act(activation)
    P = Ws[0].shape[0]
    onehot = nn.functional.one_hot(y, Ws[-1].shape[1]).to(X.dtype)  # (n, C)
    params = [*Ws, *bs]
    L = len(Ws)
    bufs = [*buffers[0], *buffers[1]] if (momentum and buffers is not None) else None
    for idx in batches:
        shared = idx.dim() == 1
        B = idx.shape[-1]
        a0 = X[idx]  # (B, d) or (P, B, d)
        # forward in the column layout: acts[l] = a_l as (P, h_l, B), so every per-piece product
        # is a (h_m x h_{m-1}) x (h_{m-1} x B) GEMM: 5-6x faster than (B x h) x (h x h) for the
        # narrow layers (MKL's small batched kernels favour the long dimension last)
        W, b = Ws[0], bs[0]
        h = W.shape[1]
        if shared:  # one GEMM for the whole stack: (P*h, d) x (d, B) -> (P, h, B)
            z = torch.addmm(b.reshape(P * h, 1), W.reshape(P * h, -1), a0.t()).view(P, h, B)
        else:
            z = torch.baddbmm(b.unsqueeze(2), W, a0.transpose(1, 2))
        acts = []
        for m in range(1, L):
            a = f(z)
            acts.append(a)
            z = torch.baddbmm(bs[m].unsqueeze(2), Ws[m], a)  # (P, h_m, B)
        # backward of sum_p mean_B CE; softmax over the classes, dim 1 of (P, C, B) (torch's
        # softmax over a last dim of 10 is 20x slower than over a middle one)
        g = torch.softmax(z, dim=1)
        g.sub_(onehot[idx].transpose(-1, -2)).mul_(1.0 / B)  # (P, C, B)
        grads_W, grads_b = [None] * L, [None] * L
        for m in range(L - 1, 0, -1):
            a = acts[m - 1]
            grads_W[m] = torch.bmm(g, a.transpose(1, 2))  # (P, h_m, h_{m-1})
            grads_b[m] = g.sum(2)
            g = torch.bmm(Ws[m].transpose(1, 2), g).mul_(df(a))  # (P, h_{m-1}, B)
        if shared:  # (P*h, B) x (B, d): one GEMM again
            grads_W[0] = torch.mm(g.reshape(P * h, B), a0).view(P, h, -1)
        else:
            grads_W[0] = torch.bmm(g, a0)
        grads_b[0] = g.sum(2)
        grads = [*grads_W, *grads_b]
        if momentum:
            if bufs is None:
                bufs = grads
            else:
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads)
            grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)
    if not momentum:
        return None
    if bufs is None:  # no step taken: the buffers are what came in (or zero)
        bufs = (
            [*buffers[0], *buffers[1]]
            if buffers is not None
            else [torch.zeros_like(t) for t in params]
        )
    return bufs[:L], bufs[L:]
