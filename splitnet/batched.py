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
autograd's bookkeeping would cost more than the arithmetic. Per step, FLOPs are
2 * P * B * h_l * h_{l-1} per product: forward, weight gradient and (l > 1) input gradient;
layer 1 with a shared order runs near the single-thread GEMM peak, the per-piece products of the
narrow layers at a fraction of it (benchmarks/bench_kernels.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .model import MLP
from .partition import ceil_div

# A shared-order stack runs layer 1 as one (P*h_1, d) x (d, B) GEMM. MKL computes a row the same
# way whatever the other rows, except for very narrow products (P*h_1 <= 8 here), which take
# another kernel; and an elementwise op over a whole stack runs in vectors of 32 floats (AVX-512,
# unrolled twice) with a leftover tail in scalar code, which rounds sigmoid differently. So
# ``train_stack`` pads a stack with zero pieces to at least MIN_COLUMNS rows in layer 1 and to a
# multiple of LANES pieces. MKL's result for a row also depends on its offset modulo 4 when the
# inner dimension d is not a multiple of 4 (seen with d = 9, 30), so inputs are padded with zero
# columns to a multiple of INPUTS. Then a piece's result never depends on its stack-mates (rows
# are identical on any number of ranks; tests/test_batched_kernel.py).
MIN_COLUMNS = 64
LANES = 32
INPUTS = 4


def stack_params(net: MLP, neurons: Sequence[Sequence[np.ndarray]]) -> tuple[list, list]:
    """Ws, bs of the pieces whose hidden neurons are ``neurons[p] = [S_1, .., S_L]`` (same sizes).

    The slicing of ``pieces.piece_params``: W_1[S_1, :], W_l[S_l, S_{l-1}], W_out[:, S_L], b_l[S_l].
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
    """(f in place, g -> g * f'(a) with f' expressed through a = f(z)): torch's backward formulas.

    relu's is ``threshold_backward`` (one pass; a bool mask times g would cost a conversion copy).
    """
    if name == "relu":
        return torch.relu_, lambda g, a: torch.ops.aten.threshold_backward(g, a, 0)
    if name == "tanh":
        return torch.tanh_, lambda g, a: g.mul_(1 - a * a)
    if name == "sigmoid":
        return torch.sigmoid_, lambda g, a: g.mul_((1 - a) * a)
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
    The stack trains padded with zero pieces and zero inputs (see MIN_COLUMNS), which changes
    no piece's result.
    """
    P, h, d = Ws[0].shape
    # at least MIN_COLUMNS rows in layer 1's GEMM, in a whole number of LANES; inputs to INPUTS
    rows = ceil_div(max(P, ceil_div(MIN_COLUMNS, h)), LANES) * LANES
    cols = ceil_div(d, INPUTS) * INPUTS
    if (rows, cols) == (P, d):
        return _train(Ws, bs, X, y, batches, lr, momentum, activation, buffers)

    def cut(t: torch.Tensor) -> tuple[slice, ...]:
        return tuple(slice(0, n) for n in t.shape)

    def grow(t: torch.Tensor, first: bool) -> torch.Tensor:
        """``t`` with zero pieces (and, for layer 1's W, zero inputs) appended."""
        out = t.new_zeros((rows, *t.shape[1:-1], cols) if first else (rows, *t.shape[1:]))
        out[cut(t)] = t
        return out

    def grown(Ws: list, bs: list) -> tuple[list, list]:
        return [grow(W, m == 0) for m, W in enumerate(Ws)], [grow(b, False) for b in bs]

    Wp, bp = grown(Ws, bs)
    if momentum and buffers is not None:
        buffers = grown(*buffers)
    batches = [
        idx if idx.dim() == 1 else torch.cat([idx, idx[:1].expand(rows - P, -1)]) for idx in batches
    ]
    X = nn.functional.pad(X, (0, cols - d))  # zero inputs: their weights get zero gradients
    out = _train(Wp, bp, X, y, batches, lr, momentum, activation, buffers)
    with torch.no_grad():
        for t, tp in zip([*Ws, *bs], [*Wp, *bp], strict=True):
            t.copy_(tp[cut(t)])
    if out is None:
        return None
    return [W[cut(t)] for W, t in zip(out[0], Ws, strict=True)], [b[:P] for b in out[1]]


def _train(Ws, bs, X, y, batches, lr, momentum, activation, buffers):
    """``train_stack`` on a padded stack."""
    f, f_back = _act(activation)
    P, C = Ws[0].shape[0], Ws[-1].shape[1]
    # the labels as (C, n) columns: a step's one-hot is onehot_t[:, idx], contiguous, so that
    # subtracting it broadcasts over the stack in one vectorised pass
    onehot_t = nn.functional.one_hot(y, C).to(X.dtype).t().contiguous()
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
            a = f(z)  # in place: z is not needed again
            acts.append(a)
            z = torch.baddbmm(bs[m].unsqueeze(2), Ws[m], a)  # (P, h_m, B)
        # backward of sum_p mean_B CE; softmax over the classes, dim 1 of (P, C, B) (torch's
        # softmax over a last dim of 10 is 20x slower than over a middle one)
        g = torch.softmax(z, dim=1)
        if shared:
            g.sub_(onehot_t[:, idx])
        else:  # (C, P, B) seen as (P, C, B)
            g.sub_(onehot_t[:, idx].transpose(0, 1))
        g.mul_(1.0 / B)  # (P, C, B)
        grads_W, grads_b = [None] * L, [None] * L
        for m in range(L - 1, 0, -1):
            a = acts[m - 1]
            grads_W[m] = torch.bmm(g, a.transpose(1, 2))  # (P, h_m, h_{m-1})
            grads_b[m] = g.sum(2)
            g = f_back(torch.bmm(Ws[m].transpose(1, 2), g), a)  # (P, h_{m-1}, B)
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
