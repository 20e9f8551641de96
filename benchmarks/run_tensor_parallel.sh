#!/usr/bin/env bash
# Sequential vs neuron-chunk parallel benchmark: 1, 2, 4 ranks, then the table and the figures.
# Run: benchmarks/run_tensor_parallel.sh [extra bench_tensor_parallel.py args, e.g. --widths 60 4096]
# One 4-rank launch times the 1-, 2- and 4-rank groups interleaved (see the bench's docstring).
# Writes results/tensor_parallel.jsonl (fresh) and results/tensor_parallel_{seq,para}.png
# (FIG_DIR=figures refreshes the committed figures).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/tensor_parallel.jsonl}
NP=${NP:-4}
rm -f "$OUT"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1   # one core per rank
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  cores: $(nproc)"
.venv/bin/mpiexec -n "$NP" .venv/bin/python -m mpi4py benchmarks/bench_tensor_parallel.py \
    --out "$OUT" "$@"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
.venv/bin/python benchmarks/bench_tensor_parallel.py --report --out "$OUT" \
    --fig-dir "${FIG_DIR:-results}"
