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


def test_three_way_split_is_stratified_seeded_and_standardised():
    ds = load_dataset("digits")
    s = three_way_split(ds, 0.3, 0.25, seed=0)
    n = len(ds.y)
    assert len(s.test[1]) == int(np.ceil(0.25 * n))
    assert len(s.pretrain[1]) + len(s.remaining[1]) + len(s.test[1]) == n
    # stratified: every part's class counts are proportional to the class frequencies
    # (scikit-learn's stratified split rounds each class to within one sample per split)
    freq = np.bincount(ds.y, minlength=10) / n
    for part, splits in ((s.test[1], 1), (s.pretrain[1], 2), (s.remaining[1], 2)):
        counts = np.bincount(part, minlength=10)
        assert np.all(np.abs(counts - freq * len(part)) <= splits + 1e-9), (counts, freq)
    X_train = s.train[0]
    np.testing.assert_allclose(X_train.mean(0), 0, atol=1e-5)  # fitted on train only
    again = three_way_split(ds, 0.3, 0.25, seed=0)
    assert np.array_equal(again.test[0], s.test[0])
    other = three_way_split(ds, 0.3, 0.25, seed=1)
    assert not np.array_equal(other.test[1], s.test[1])


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
