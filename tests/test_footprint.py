"""A net that cannot fit is refused before anything is allocated, naming model.hidden."""

from __future__ import annotations

import pytest

from splitnet import footprint
from splitnet.model import MLP


def test_parameter_count_is_torchs():
    sizes = [64, 7, 5, 10]
    assert footprint.n_parameters(sizes) == sum(p.numel() for p in MLP(sizes).parameters())
    assert footprint.least_bytes(sizes) == 2 * 4 * footprint.n_parameters(sizes)


def test_a_net_wider_than_memory_is_refused_with_the_estimate():
    sizes = [784, 200_000, 200_000, 10]  # 4.0e10 parameters: 320 GB of weights + gradients
    with pytest.raises(ValueError, match=r"model.hidden=\[200000, 200000\] needs at least 29") as e:
        footprint.check_fits(sizes, available=24 * 2**30)
    assert "24.0 GiB available" in str(e.value) and "40,159,200,010 parameters" in str(e.value)
    footprint.check_fits([784, 1024, 1024, 10], available=24 * 2**30)  # 1.8 M parameters: fits


def test_available_memory_is_read():
    have = footprint.available_bytes()
    assert 2**20 < have < 2**50


def test_the_driver_refuses_a_net_too_big_before_counting_or_training(tmp_path):
    """In a subprocess capped at 4 GB of address space: a regression that allocates (or counts
    a space of 200,000-wide layers) fails here instead of taking the machine's memory."""
    import resource
    import subprocess
    import sys

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    out = tmp_path / "big.jsonl"
    argv = ["--set", "model.hidden=[200000, 200000]", "--out", str(out), "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-m", "splitnet.enumerate", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=cap,
    )
    assert proc.returncode == 2 and not out.exists(), proc.stderr
    assert "model.hidden=[200000, 200000] needs at least" in proc.stderr, proc.stderr
    assert "available" in proc.stderr and "Traceback" not in proc.stderr
