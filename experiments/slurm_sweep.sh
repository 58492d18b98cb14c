#!/bin/sh
# A sweep as a Slurm job array: one array task per point, each running only its point.
#
#   N=$(./fifolab plan experiments/ablation_partitions.lua --count)
#   sbatch --array=0-$((N - 1)) experiments/slurm_sweep.sh experiments/ablation_partitions.lua
#
# Points whose run is complete are skipped and interrupted ones resume, so resubmitting the
# same array after a failure or a time limit finishes the sweep. Slurm sends SIGTERM before
# killing a task at its time limit: fifolab then saves its state and exits 143.
# Extra arguments after the script are passed to fifolab run (e.g. --out /scratch/runs).
#SBATCH --job-name=fifolab-sweep
#SBATCH --cpus-per-task=2
#SBATCH --time=01:00:00
#SBATCH --signal=TERM@60
#SBATCH --output=fifolab-%A_%a.log
set -eu
script=$1
shift
exec ./fifolab run "$script" --index "${SLURM_ARRAY_TASK_ID:?not started by sbatch --array}" "$@"
