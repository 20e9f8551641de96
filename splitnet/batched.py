"""Batched engine (``train.engine = "batched"``): train many same-shape pieces as one computation.

A *stack* holds P pieces of equal sizes [d, h_1..h_L, C] (across combinations and paths) as
W_l: (P, h_l, h_{l-1}) and b_l: (P, h_l). One SGD step on minibatch rows ``idx``::

    a_0 = X[idx]                  (B, d) with train.shuffle = "shared", (P, B, d) with "per-piece"
    z_l = a_{l-1} W_l^T + b_l     (P, B, h_l)    (layer 1, shared a_0: one (B, d)x(d, P*h_1) GEMM)
    a_l = f(z_l),  logits = z_{L+1}
    g_{L+1} = (softmax(logits) - onehot(y)) / B       = d(sum_p CE_p) / d logits
    dW_l = g_l^T a_{l-1},  db_l = sum_B g_l,  g_{l-1} = (g_l W_l) * f'(a_{l-1})
    buf = momentum * buf + dW  (first step buf = dW),  W -= lr * buf          (= torch.optim.SGD)

The stack's loss is the sum over pieces of each piece's mean cross-entropy, so every piece gets
exactly its own gradient and the result equals ``train.train`` per piece up to float rounding.
The backward is written out with bmm: for nets of a few neurons autograd's bookkeeping would cost
more than the arithmetic. Stacks hold at most ``MAX_STACK`` pieces, so memory is bounded by the
stack size, never by the number of combinations.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch
from torch import nn

from .model import MLP
from .subnet import piece_neurons
from .train import batch_order

MAX_STACK = 1024  # pieces trained together; larger job lists are split into several stacks
# A shared-order stack runs layer 1 as one (B, d) x (d, P*h_1) GEMM. MKL computes a column the same
# way whatever the other columns, except for very narrow products (P*h_1 <= 8 here), which take
# another kernel; small stacks are padded to MIN_COLUMNS so a piece's result never depends on its
# stack-mates (rows are identical on any number of ranks).
MIN_COLUMNS = 64


# --- stacking: pieces of the pretrained net as (P, ...) tensors -------------------------------

def stack_params(net: MLP, neurons: list[list[np.ndarray]]) -> tuple[list, list]:
    """Ws, bs of the pieces whose hidden neurons are ``neurons[p] = [S_1, .., S_L]`` (same sizes).

    The slicing of ``subnet.extract``: W_1[S_1, :], W_l[S_l, S_{l-1}], W_out[:, S_L], b_l[S_l].
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


def make_mlp(sizes, activation: str, Ws, bs) -> MLP:
    """An MLP holding copies of the given weights, built without ``nn.Module.__init__``.

    Module construction (about 0.5 ms for a 3-layer MLP) would cost more than training the piece,
    so every piece is a structural copy of one template per shape, with fresh attribute dicts.
    """
    key = (tuple(sizes), activation)
    template = _TEMPLATES.get(key)
    if template is None:
        template = _TEMPLATES[key] = MLP(sizes, activation)
    net = _clone_module(template)
    for lin, W, b in zip(net.linears, Ws, bs, strict=True):
        lin._parameters["weight"] = nn.Parameter(W.clone())
        lin._parameters["bias"] = nn.Parameter(b.clone())
    return net


_TEMPLATES: dict = {}


def _clone_module(mod: nn.Module) -> nn.Module:
    new = mod.__class__.__new__(mod.__class__)
    # every dict/set attribute (parameters, buffers, hooks, submodules) is a new container
    new.__dict__ = {k: (v.copy() if isinstance(v, (dict, set)) else v)
                    for k, v in mod.__dict__.items()}
    for name, child in mod._modules.items():
        new._modules[name] = _clone_module(child)
    return new


# --- one stack: forward, hand-written backward, SGD --------------------------------------------

def _act(name: str):
    """(f, f' expressed through a = f(z)), the same formulas as torch's backward."""
    if name == "relu":
        return torch.relu, lambda a: a > 0
    if name == "tanh":
        return torch.tanh, lambda a: 1 - a * a
    if name == "sigmoid":
        return torch.sigmoid, lambda a: (1 - a) * a
    raise ValueError(f"activation={name!r} is not one of relu, tanh, sigmoid")


def train_stack(Ws, bs, X: torch.Tensor, y: torch.Tensor, orders, *, batch_size: int, lr: float,
                momentum: float, activation: str) -> None:
    """Train the stack (Ws, bs) in place.

    ``orders``: a list of epoch permutations, each (n,) for a shared order or (P, n) per piece.
    """
    f, df = _act(activation)
    P = Ws[0].shape[0]
    onehot = nn.functional.one_hot(y, Ws[-1].shape[1]).to(X.dtype)  # (n, C)
    params = [*Ws, *bs]
    bufs = None
    L = len(Ws)
    for perm in orders:
        shared = perm.dim() == 1
        n = perm.shape[-1]
        for start in range(0, n, batch_size):
            idx = perm[..., start:start + batch_size]
            B = idx.shape[-1]
            a0 = X[idx]  # (B, d) or (P, B, d)
            # forward; acts[l] = a_l as (P, B, h_l)
            W, b = Ws[0], bs[0]
            h = W.shape[1]
            if shared:  # one GEMM for the whole stack: (B, d) x (d, P*h) -> (B, P, h)
                z = torch.addmm(b.reshape(1, P * h), a0, W.reshape(P * h, -1).t())
                z = z.view(B, P, h).transpose(0, 1)
            else:
                z = torch.baddbmm(b.unsqueeze(1), a0, W.transpose(1, 2))
            acts = []
            for m in range(1, L):
                a = f(z)
                acts.append(a)
                z = torch.baddbmm(bs[m].unsqueeze(1), a, Ws[m].transpose(1, 2))
            # backward of sum_p mean_B CE
            g = torch.softmax(z, dim=2)
            g.sub_(onehot[idx]).mul_(1.0 / B)  # (P, B, C)
            grads_W, grads_b = [None] * L, [None] * L
            for m in range(L - 1, 0, -1):
                a = acts[m - 1]
                grads_W[m] = torch.bmm(g.transpose(1, 2), a)  # (P, h_m, h_{m-1})
                grads_b[m] = g.sum(1)
                g = torch.bmm(g, Ws[m]).mul_(df(a))  # (P, B, h_{m-1})
            if shared:  # (P*h, B) x (B, d): one GEMM again
                gt = g.transpose(0, 1).reshape(B, P * h)
                grads_W[0] = torch.mm(gt.t(), a0).view(P, h, -1)
            else:
                grads_W[0] = torch.bmm(g.transpose(1, 2), a0)
            grads_b[0] = g.sum(1)
            grads = [*grads_W, *grads_b]
            if momentum:
                if bufs is None:
                    bufs = grads
                else:
                    torch._foreach_mul_(bufs, momentum)
                    torch._foreach_add_(bufs, grads)
                grads = bufs
            torch._foreach_add_(params, grads, alpha=-lr)


# --- the engine ---------------------------------------------------------------------------------

def train_pieces_batched(prep, jobs, max_stack: int = MAX_STACK) -> list[tuple[MLP, float]]:
    """``experiment.train_pieces`` for ``train.engine = "batched"``: same pieces, same order.

    Jobs are grouped by piece shape (uneven groups give several shapes), each group is cut into
    stacks of at most ``max_stack`` pieces; a piece's seconds are its share of its stack's time.
    """
    from .experiment import piece_seed, remaining_order_seed

    cfg, t = prep.config, prep.config.train
    X, y = (torch.as_tensor(a) for a in prep.data.remaining)
    net = prep.pretrained
    neurons = [piece_neurons(split, path) for _, split, path in jobs]
    by_shape = defaultdict(list)
    for i, ns in enumerate(neurons):
        by_shape[tuple(len(s) for s in ns)].append(i)
    shared = None
    if t.shuffle == "shared":
        shared = batch_order(len(X), t.piece_epochs, remaining_order_seed(cfg))
    out: list = [None] * len(jobs)
    for hidden, members in by_shape.items():
        sizes = [net.sizes[0], *hidden, net.sizes[-1]]
        for lo in range(0, len(members), max_stack):
            stack = members[lo:lo + max_stack]
            t0 = time.perf_counter()
            if shared is not None:
                pad = max(0, -(-MIN_COLUMNS // hidden[0]) - len(stack))
                Ws, bs = stack_params(net, [neurons[i] for i in stack + [stack[0]] * pad])
                orders = shared
            else:
                Ws, bs = stack_params(net, [neurons[i] for i in stack])
                per = [batch_order(len(X), t.piece_epochs, piece_seed(cfg, jobs[i][0], jobs[i][2]))
                       for i in stack]
                orders = [torch.stack([o[e] for o in per]) for e in range(t.piece_epochs)]
            train_stack(Ws, bs, X, y, orders, batch_size=t.batch_size, lr=t.lr,
                        momentum=t.momentum, activation=net.activation)
            pieces = [make_mlp(sizes, net.activation, [W[p] for W in Ws], [b[p] for b in bs])
                      for p in range(len(stack))]
            share = (time.perf_counter() - t0) / len(stack)
            for i, piece in zip(stack, pieces, strict=True):
                out[i] = (piece, share)
    return out


# --- fast paths for the rows (recombination and shipping pieces between ranks) ------------------
# Once training is batched, per-combination Python overhead dominates: building nn.Modules,
# pickling state_dicts (torch serialises every tensor separately), and recombine's tensor
# indexing on index sets of a few neurons. These helpers give the same values, bit for bit
# (recombination itself now runs on numpy index sets in ``subnet.recombine``).

def pack_piece(piece: MLP) -> np.ndarray:
    """A piece's parameters as one float32 vector (Linear by Linear: weight, then bias)."""
    return torch.cat([p.detach().reshape(-1) for p in piece.parameters()]).numpy()


def unpack_piece(net: MLP, split, path, flat: np.ndarray) -> MLP:
    """The piece of ``net`` for ``path`` holding the parameters ``flat`` (from ``pack_piece``)."""
    sizes = [net.sizes[0], *(len(s) for s in piece_neurons(split, path)), net.sizes[-1]]
    flat = torch.from_numpy(np.asarray(flat, dtype=np.float32))
    Ws, bs, at = [], [], 0
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        Ws.append(flat[at:at + a * b].view(b, a))
        bs.append(flat[at + a * b:at + a * b + b])
        at += a * b + b
    if at != flat.numel():
        raise ValueError(f"a packed piece of sizes {sizes} has {at} values, got {flat.numel()}")
    return make_mlp(sizes, net.activation, Ws, bs)
