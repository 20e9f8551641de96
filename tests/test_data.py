"""Datasets load offline; the split is stratified, seeded and standardised on train only."""

import gzip
import struct

import numpy as np
import pytest

from splitnet.data import load_dataset, load_idx_or_npz, read_idx, three_way_split


@pytest.mark.parametrize(
    "name,n,d",
    [
        ("digits", 1797, 64),
        ("iris", 150, 4),
        ("wine", 178, 13),
        ("breast_cancer", 569, 30),
        ("synthetic", 2000, 20),
    ],
)
def test_bundled_sets(name, n, d):
    ds = load_dataset(name)
    assert ds.X.shape == (n, d) and ds.X.dtype == np.float32 and ds.y.shape == (n,)


def test_mnist_subset_is_real_and_offline():
    ds = load_dataset("mnist")
    assert ds.X.shape == (5000, 784) and ds.image_shape == (1, 28, 28)
    assert sorted(np.unique(ds.y)) == list(range(10)) and 0 <= ds.X.min() and ds.X.max() <= 1


def test_three_way_split_is_sized_seeded_and_standardised():
    ds = load_dataset("digits")
    s = three_way_split(ds, 0.3, 0.25, seed=0)
    n = len(ds.y)
    assert len(s.test[1]) == int(np.ceil(0.25 * n))
    assert len(s.pretrain[1]) + len(s.remaining[1]) + len(s.test[1]) == n
    X_train = s.train[0]
    np.testing.assert_allclose(X_train.mean(0), 0, atol=1e-5)  # fitted on train only
    again = three_way_split(ds, 0.3, 0.25, seed=0)
    assert np.array_equal(again.test[0], s.test[0])
    other = three_way_split(ds, 0.3, 0.25, seed=1)
    assert not np.array_equal(other.test[1], s.test[1])


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine"])
@pytest.mark.parametrize("seed", [0, 3])
def test_every_part_is_stratified(name, seed):
    """Per-class counts are proportional to the class frequencies, within the closed form of
    scikit-learn's stratified split: a split gives class i floor or ceil of n_part * p_i (so it
    is off by less than 1), and pretrain / remaining are split from the train part, whose own
    class counts are off by less than 1: off by less than 1 + n_part / n_train from n_part * p."""
    ds = load_dataset(name)
    s = three_way_split(ds, 0.3, 0.25, seed=seed)
    C = int(ds.y.max()) + 1
    p = np.bincount(ds.y, minlength=C) / len(ds.y)
    n_train = len(s.train[1])
    p_train = np.bincount(s.train[1], minlength=C) / n_train
    off = {}
    for part, labels in (("test", s.test[1]), ("pretrain", s.pretrain[1]), ("rem", s.remaining[1])):
        counts = np.bincount(labels, minlength=C)
        off[part] = np.abs(counts - len(labels) * p)
        bound = 1 if part == "test" else 1 + len(labels) / n_train
        assert np.all(off[part] < bound), (part, counts, len(labels) * p)
        if part != "test":  # and within one sample of the train part's frequencies
            assert np.all(np.abs(counts - len(labels) * p_train) < 1)
    # a shuffled, unstratified split of the same sizes misses the bound (the check has teeth)
    perm = np.random.default_rng(seed).permutation(ds.y)[: len(s.test[1])]
    assert np.any(np.abs(np.bincount(perm, minlength=C) - len(perm) * p) >= 1)


def write_idx(path, array, code=0x08):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, code, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(">u1").tobytes())


def test_idx_directory_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 3
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), imgs)
    ds = load_idx_or_npz(tmp_path)
    assert ds.X.shape == (12, 784) and ds.image_shape == (1, 28, 28)
    np.testing.assert_allclose(ds.X[3], imgs[3].reshape(-1) / 255.0)
    assert np.array_equal(ds.y, labels)
    np.savez(
        tmp_path / "f.npz", x_train=imgs[:8], y_train=labels[:8], x_test=imgs[8:], y_test=labels[8:]
    )
    assert np.array_equal(load_idx_or_npz(tmp_path / "f.npz").y, labels)


def test_bad_inputs_are_named(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    with pytest.raises(ValueError, match="no train-images"):
        load_idx_or_npz(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_idx_or_npz(tmp_path / "nope")
    with pytest.raises(ValueError, match="data.name='cifar'"):
        load_dataset("cifar")
