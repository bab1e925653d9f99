#!/usr/bin/env bash
# Extraction as a Slurm job array of N tasks, then `merge` and `train-head` as one job that runs only
# if every task succeeded (--dependency=afterok). Prints the two job ids.
#   scripts/slurm/submit.sh N DATA RUN [MODEL] [extra extract flags…]
# BIN (default: bottleneck on PATH) is the binary every node runs; DATA and RUN must be on storage
# that every node sees. Set NO_HEAD=1 to stop after merge.
set -euo pipefail
n=${1:?N}; data=${2:?DATA}; run=${3:?RUN}; model=${4:-vgg16}; shift $(( $# < 4 ? $# : 4 ))
here=$(cd "$(dirname "$0")" && pwd)
bin=${BIN:-bottleneck}
mkdir -p "$run"
array=$(sbatch --parsable --array=0-$((n - 1)) --chdir="$PWD" --output="$run/slurm-extract-%a.out" \
  --export=ALL,BIN="$bin",DATA="$data",RUN="$run",MODEL="$model",EXTRACT_ARGS="$*" \
  "$here/extract_array.sbatch")
after="\"$bin\" merge --run \"$run\""
[ "${NO_HEAD:-0}" = 1 ] || after="$after && \"$bin\" train-head --run \"$run\""
merge=$(sbatch --parsable --dependency=afterok:"$array" --kill-on-invalid-dep=yes --chdir="$PWD" \
  --job-name=bottleneck-merge --output="$run/slurm-merge.out" --wrap "$after")
echo "$array $merge"
