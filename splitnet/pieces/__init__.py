"""Pieces: the sub-network of a path out of a net, trained pieces recombined, packed for the wire.

    layout         ``Params`` (the order of a net's tensors), ``as_mlp``, ``pack`` / ``unpack``
    extract        S_l of a path, ``piece_params`` (W_l[S_l, S_{l-1}], ...), dropout scaling
    recombination  held counts, ``recombine`` (mean of held entries) and ``recombine_stacked``
    norm           BatchNorm: ``fold`` into the weights, ``restat`` / ``inference_net``
    forward        a piece's logits, the logit-sum ensemble, the masked full net

Each module's docstring states its part of the maths. The recombine -> stitch -> inference-net
tail that every consumer runs is ``rounds.recombined_net`` (stitching trains, so it sits above
this package).
"""

from .extract import dropout_factors, extract, piece_neurons, piece_params, scale_for_dropout
from .forward import ensemble_logits, forward, masked_forward
from .layout import (
    Entry,
    GroupPath,
    Params,
    as_mlp,
    layout,
    layout_of,
    n_params,
    n_values,
    pack,
    params_of,
    shapes,
    sizes_of,
    unpack,
)
from .norm import BN_EPS, fold, inference_net, restat
from .recombination import (
    held_counts,
    hidden_held_counts,
    recombine,
    recombine_stacked,
    unscale_recombined,
)

__all__ = [
    "BN_EPS",
    "Entry",
    "GroupPath",
    "Params",
    "as_mlp",
    "dropout_factors",
    "ensemble_logits",
    "extract",
    "fold",
    "forward",
    "held_counts",
    "hidden_held_counts",
    "inference_net",
    "layout",
    "layout_of",
    "masked_forward",
    "n_params",
    "n_values",
    "pack",
    "params_of",
    "piece_neurons",
    "piece_params",
    "recombine",
    "recombine_stacked",
    "restat",
    "scale_for_dropout",
    "shapes",
    "sizes_of",
    "unpack",
    "unscale_recombined",
]
