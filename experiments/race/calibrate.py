"""Fit this machine's alpha-beta (ping-pong, ranks 0 and 1) for the race projection.

mpiexec -n 2 python -m mpi4py experiments/race/calibrate.py results/race/calibration.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from splitnet.mpi import world
from splitnet.parallel.costmodel import calibrate

comm = world()
params, sizes, times = calibrate(comm, reps=20)
if comm.Get_rank() == 0:
    out = {"params": asdict(params), "sizes": sizes.tolist(), "times": times.tolist()}
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)
    print(f"alpha {params.alpha * 1e6:.2f} us, beta {1 / params.beta / 1e9:.2f} GB/s")
