#!/usr/bin/env bash
# Submit a job array over N shards and the merge that waits for it; prints the two job ids.
#
#   hpc/submit.sh experiments/X.toml [N=8] [splitnet.enumerate args, e.g. --set split.groups=3]
#
# Run from the repository root (it is the jobs' working directory). Running the same command
# again resumes: every shard skips the combinations it already recorded, then the merge re-runs.
# The merge (hpc/merge.sbatch) starts when every task has ended, however it ended
# (afterany), writes results/<X>.jsonl and exits 1 naming the shards to resubmit if any are
# incomplete. Results: results/<X>.shard-T-of-N.jsonl, then results/<X>.jsonl.
#
# Edit for your cluster: the #SBATCH lines in hpc/enumerate_array.sbatch and hpc/merge.sbatch,
# or leave them and set, for both jobs, SBATCH_PARTITION, SBATCH_ACCOUNT (Slurm's own input
# variables) or SPLITNET_SBATCH_ARGS="--partition=p --account=a --qos=q"; the array only:
# SPLITNET_ARRAY_ARGS="--time=02:00:00 --ntasks=4 --array=0-63%16" (a later --array wins).
# SPLITNET_LOGDIR=DIR puts the jobs' logs in DIR. SPLITNET_VENV, SPLITNET_RESULTS,
# SPLITNET_NAME, SPLITNET_LAUNCH pass through to the jobs (see the .sbatch headers).
set -euo pipefail

usage="usage: hpc/submit.sh CONFIG.toml [N] [splitnet.enumerate args]"
CONFIG=${1:?$usage}
shift
N=8
if [ "$#" -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    N=$1
    shift
fi
[ "$N" -ge 1 ] || { echo "error: N=$N shards: need N >= 1; $usage" >&2; exit 2; }
[ -r "$CONFIG" ] || { echo "error: cannot read config $CONFIG (relative to $PWD)" >&2; exit 2; }
HPC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v sbatch >/dev/null || { echo "error: sbatch not found: run this on a Slurm login node" >&2; exit 2; }

read -r -a common <<< "${SPLITNET_SBATCH_ARGS:-}"
read -r -a array_extra <<< "${SPLITNET_ARRAY_ARGS:-}"
array_log=() merge_log=()
if [ -n "${SPLITNET_LOGDIR:-}" ]; then
    mkdir -p "$SPLITNET_LOGDIR"
    array_log=(--output="$SPLITNET_LOGDIR/%x-%A_%a.out")
    merge_log=(--output="$SPLITNET_LOGDIR/%x-%j.out")
fi

# --export=ALL,SPLITNET_SHARDS=N: the merge knows N even if no task wrote a file.
array_id=$(sbatch --parsable --array="0-$((N - 1))" "${common[@]}" "${array_log[@]}" \
    "${array_extra[@]}" "$HPC/enumerate_array.sbatch" "$CONFIG" "$@")
array_id=${array_id%%;*}  # --parsable prints "id" or "id;cluster"
merge_id=$(sbatch --parsable --dependency="afterany:$array_id" --export="ALL,SPLITNET_SHARDS=$N" \
    "${common[@]}" "${merge_log[@]}" "$HPC/merge.sbatch" "$CONFIG" "$@")
merge_id=${merge_id%%;*}
echo "array job $array_id (shards 0-$((N - 1)) of $N), merge job $merge_id (afterany:$array_id)"
echo "watch: squeue -j $array_id,$merge_id    results: ${SPLITNET_RESULTS:-results}/${SPLITNET_NAME:-$(basename "$CONFIG" .toml)}.jsonl"
