"""Neuron-chunk (tensor) parallel MLP: every layer's neurons are split across the ranks.

Run the check: ``mpiexec -n 4 python -m mpi4py tests/mpi_scripts/tp_check.py``.

The partition (the MPI NN slides', written Megatron-style). Layer l computes, for a batch X::

    Y = f(X W^T + b),    W = [W_0; W_1; ...; W_{p-1}]  (stacked by output rows),  b = [b_0; ...]

Rank r owns the rows ``off_r : off_r + n_r`` of W and b, i.e. the neurons of its chunk, and
computes ``Y_r = f(X W_r^T + b_r)`` on the *full* previous output X; an Allgatherv assembles
``Y = [Y_0, ..., Y_{p-1}]`` on every rank as the next layer's input. The sizes are those of
``splitnet.partition`` (``np.array_split``'s): ``n_r = n // p + (r < n % p)`` and
``off_r = r * (n // p) + min(r, n % p)``, so the first ``n % p`` ranks hold one extra neuron
and, when ``n < p``, the last ranks own 0 rows (they still take part in every collective, with
a count of 0). For ``p | n`` this is the slides' ``chunk = n / p``, rank r computing
``layer[r*chunk : r*chunk+chunk]``.

Layout: activations are kept feature-major, ``A_l`` of shape ``(n_l, B)``. A rank's chunk
``W_r @ A_{l-1}`` is then a contiguous row block of ``A_l``, computed straight into its place in
the receive buffer, and the gather is an in-place Allgatherv with counts ``n_r * B`` (precomputed
per batch size): no transposes, no copies, no per-neuron Python loops on the hot path.

Backward (softmax cross-entropy, mean over the batch, as ``torch.nn.functional.cross_entropy``).
With ``D_l = dL/dZ_l`` and rank r holding its rows ``D_{l,r}``::

    dW_r = D_{l,r} A_{l-1}^T,   db_r = D_{l,r} 1,                        (local: no messages)
    D_{l-1} = (sum_r W_r^T D_{l,r}) * f'(A_{l-1})                        (Reduce_scatter)

Every rank has the full logits, so ``D_L = (softmax(Z_L) - onehot(y)) / B`` needs no message.
The partial products ``W_r^T D_{l,r}`` are summed and scattered in one ``Reduce_scatter`` with
the next layer's row counts: the transpose of the forward Allgatherv, and each rank receives
just the delta rows it owns. ``train_step`` is one plain SGD step (``W -= lr * dW``), equal to
``torch.optim.SGD(lr)`` without momentum.

Numbers are float32 or float64, the dtype of the torch module (float32 for a default one).
A p-rank net equals the 1-rank net up to float summation order: the same weights are sliced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.special import expit
from torch import nn

from ..model import ACTIVATIONS, parse_sequential
from ..mpi import IN_PLACE, Comm, world
from ..partition import bounds


# In-place activations and f'(a) written in terms of the output a = f(z), so only A is stored.
def _activation(name: str, dtype: np.dtype) -> Callable[[np.ndarray], np.ndarray] | None:
    zero = np.zeros((), dtype)  # a 0-d array of the same dtype: the cheapest ufunc operand
    return {
        "relu": lambda z: np.maximum(z, zero, out=z),
        "tanh": lambda z: np.tanh(z, out=z),
        "sigmoid": lambda z: expit(z, out=z),
        "identity": None,
    }[name]


_DERIV = {
    "relu": lambda a: a > 0,
    "tanh": lambda a: 1 - a * a,
    "sigmoid": lambda a: a * (1 - a),
}
_ACTIVATIONS = (*ACTIVATIONS, "identity")


class Plan:
    """Buffers and Allgatherv / Reduce_scatter counts for one batch size B (built once)."""

    def __init__(self, net: ChunkedMLP, B: int):
        dt = net.dtype
        self.acts = [np.empty((n, B), dt) for n in net.sizes]  # A_0 .. A_L, (n_l, B)
        self.outs = [
            a[o : o + c] for a, o, c in zip(self.acts[1:], net.offs, net.counts, strict=True)
        ]
        self.gather = [
            [a, (net.all_counts[l] * B, net.all_offs[l] * B)] for l, a in enumerate(self.acts[1:])
        ]
        self.scatter = [net.all_counts[l] * B for l in range(len(net.counts))]
        self.partial = [np.empty((n, B), dt) for n in net.sizes[1:-1]]  # sum_r W_r^T D_{l,r}
        # the forward hot path, one tuple per layer (W and b are only ever updated in place)
        gather = net.size > 1
        self.steps = [
            (w, out, b, _activation(act, dt), spec if gather else None, full)
            for w, out, b, act, spec, full in zip(
                net.W, self.outs, net.b, net.acts, self.gather, self.acts[1:], strict=True
            )
        ]
        self.delta = [np.empty((c, B), dt) for c in net.counts]  # D_{l,r}

    def clear(self) -> None:
        """Every buffer set to 0: a benchmark whose collectives do nothing (the race's one-rank
        timing of rank 0's share) then computes on zeros, not on uninitialised memory."""
        for a in [*self.acts, *self.delta, *self.partial]:
            a.fill(0.0)


class ChunkedMLP:
    """An MLP whose every layer is split by neurons (output rows) across ``comm``'s ranks."""

    def __init__(
        self,
        weights: Sequence[ArrayLike],
        biases: Sequence[ArrayLike],
        activations: Sequence[str],
        comm: Comm | None = None,
        *,
        has_bias: Sequence[bool] | None = None,
    ):
        """``weights[l]``: the full ``(n_l, n_{l-1})`` matrix on every rank; each keeps its rows."""
        self.comm = comm or world()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.dtype = np.asarray(weights[0]).dtype
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype={self.dtype} must be float32 or float64")
        self.acts = list(activations)
        for a in self.acts:
            if a not in _ACTIVATIONS:
                raise ValueError(f"activation={a!r} is not one of {', '.join(_ACTIVATIONS)}")
        self.sizes = [int(np.shape(weights[0])[1])] + [int(np.shape(w)[0]) for w in weights]
        self.has_bias = list(has_bias) if has_bias is not None else [True] * len(weights)
        # rank r owns rows b[r] : b[r+1] of every layer (splitnet.partition: np.array_split's)
        parts = [np.array(bounds(n, self.size), dtype=np.int64) for n in self.sizes[1:]]
        self.all_counts = [np.diff(b) for b in parts]
        self.all_offs = [b[:-1] for b in parts]
        self.counts = [int(c[self.rank]) for c in self.all_counts]
        self.offs = [int(o[self.rank]) for o in self.all_offs]
        self.W, self.b = [], []
        for w, b, o, c in zip(weights, biases, self.offs, self.counts, strict=True):
            self.W.append(np.array(np.asarray(w)[o : o + c], dtype=self.dtype, order="C"))
            self.b.append(np.array(np.asarray(b)[o : o + c], dtype=self.dtype).reshape(c, 1))
        self.dW = [np.empty_like(w) for w in self.W]
        self._plans: dict[int, Plan] = {}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_torch(
        cls, module: nn.Module, comm: Comm | None = None, broadcast: bool = True
    ) -> ChunkedMLP:
        """Slice every rank's rows out of ``module`` (rank 0's weights if ``broadcast``)."""
        comm = comm or world()
        layers = parse_sequential(module)
        ws = [lin.weight.detach().cpu().numpy().copy() for lin, _ in layers]
        bs = [
            (
                lin.bias.detach().cpu().numpy().copy()
                if lin.bias is not None
                else np.zeros(lin.out_features, ws[0].dtype)
            )
            for lin, _ in layers
        ]
        if broadcast and comm.Get_size() > 1:  # guard against ranks built from different seeds
            for arr in ws + bs:
                comm.Bcast(arr, root=0)
        return cls(
            ws,
            bs,
            [a for _, a in layers],
            comm,
            has_bias=[lin.bias is not None for lin, _ in layers],
        )

    def _gather_rows(self, local: np.ndarray, l: int) -> np.ndarray:
        """The full ``(n_l, k)`` matrix from every rank's ``(n_r, k)`` rows of layer l."""
        k = local.shape[1]
        full = np.empty((self.sizes[l + 1], k), self.dtype)
        if self.size == 1:
            full[...] = local
        else:
            spec = (self.all_counts[l] * k, self.all_offs[l] * k)
            self.comm.Allgatherv(np.ascontiguousarray(local), [full, spec])
        return full

    def full_parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W_l, b_l), ...]`` assembled on every rank (collective)."""
        return [
            (self._gather_rows(w, l), self._gather_rows(b, l)[:, 0])
            for l, (w, b) in enumerate(zip(self.W, self.b, strict=True))
        ]

    def to_torch(self) -> nn.Sequential:
        """The full net as a torch ``nn.Sequential`` on every rank (collective)."""
        mods: list[nn.Module] = []
        for (w, b), act, hb in zip(self.full_parameters(), self.acts, self.has_bias, strict=True):
            lin = nn.Linear(w.shape[1], w.shape[0], bias=hb).to(torch.from_numpy(w).dtype)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                if hb:
                    lin.bias.copy_(torch.from_numpy(b))
            mods.append(lin)
            if act != "identity":
                mods.append(ACTIVATIONS[act].module())
        return nn.Sequential(*mods)

    # -- compute ------------------------------------------------------------------------------
    def plan(self, B: int) -> Plan:
        """The buffers of batch size ``B``, built on first use and kept."""
        plan = self._plans.get(B)
        if plan is None:
            if len(self._plans) >= 8:  # bounded cache: a trailing partial batch adds one entry
                self._plans.clear()
            plan = self._plans[B] = Plan(self, B)
        return plan

    def _forward(self, x: ArrayLike) -> Plan:
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"x.shape={x.shape} must be (batch, {self.sizes[0]})")
        plan = self.plan(x.shape[0])
        np.copyto(plan.acts[0], x.T)
        a = plan.acts[0]
        comm = self.comm
        for w, out, b, f, spec, full in plan.steps:
            np.dot(w, a, out=out)  # (n_r, n_{l-1}) @ (n_{l-1}, B): my rows
            out += b
            if f is not None:
                f(out)
            if spec is not None:  # everyone's rows, in place
                comm.Allgatherv(IN_PLACE, spec)
            a = full
        return plan

    def forward(self, x: ArrayLike) -> np.ndarray:
        """Full output ``(B, d_out)`` on every rank (``(d_out,)`` for one 1-D sample)."""
        x = np.asarray(x)
        if x.ndim == 1:
            return self._forward(x[None]).acts[-1][:, 0].copy()
        return self._forward(x).acts[-1].T.copy()

    __call__ = forward

    def backward(self, x: ArrayLike, y: ArrayLike) -> float:
        """Forward, then this rank's ``self.dW[l]`` and ``self.db[l]``; returns the mean CE loss."""
        y = np.asarray(y)
        plan = self._forward(x)
        B = y.shape[0]
        logits = plan.acts[-1]  # (C, B), identical on every rank
        if y.shape != (logits.shape[1],) or y.min() < 0 or y.max() >= logits.shape[0]:
            raise ValueError(f"y must hold {logits.shape[1]} labels in [0, {logits.shape[0]})")
        z = logits - logits.max(axis=0)
        p = np.exp(z)
        s = p.sum(axis=0)
        loss = float(np.mean(np.log(s) - z[y, np.arange(B)]))
        p /= s
        p[y, np.arange(B)] -= 1
        p /= B
        L = len(self.W)
        d = plan.delta[L - 1]
        d[...] = p[self.offs[-1] : self.offs[-1] + self.counts[-1]]
        if self.acts[-1] != "identity":  # an activation on the output layer
            d *= _DERIV[self.acts[-1]](plan.outs[-1])
        self.db = [None] * L
        for l in range(L - 1, -1, -1):
            d = plan.delta[l]
            np.dot(d, plan.acts[l].T, out=self.dW[l])  # (n_r, B) @ (B, n_{l-1})
            self.db[l] = d.sum(axis=1, keepdims=True)
            if l == 0:
                break
            part = plan.partial[l - 1]
            np.dot(self.W[l].T, d, out=part)  # (n_{l-1}, n_r) @ (n_r, B)
            nxt = plan.delta[l - 1]
            if self.size > 1:
                self.comm.Reduce_scatter(part, nxt, plan.scatter[l - 1])
            else:
                nxt[...] = part
            if self.acts[l - 1] != "identity":
                nxt *= _DERIV[self.acts[l - 1]](plan.outs[l - 1])
        return loss

    def full_gradients(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(dW_l, db_l), ...]`` of the last ``backward`` on every rank (collective)."""
        return [
            (self._gather_rows(dw, l), self._gather_rows(db, l)[:, 0])
            for l, (dw, db) in enumerate(zip(self.dW, self.db, strict=True))
        ]

    def train_step(self, x: ArrayLike, y: ArrayLike, lr: float) -> float:
        """One SGD step on the batch ``(x, y)`` (mean softmax cross-entropy); returns the loss."""
        loss = self.backward(x, y)
        for l in range(len(self.W)):
            self.W[l] -= lr * self.dW[l]
            if self.has_bias[l]:
                self.b[l] -= lr * self.db[l]
        return loss

    def predict(self, x: ArrayLike) -> np.ndarray:
        """Class labels (argmax of the output)."""
        return np.argmax(self.forward(np.atleast_2d(x)), axis=1)
