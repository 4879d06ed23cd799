#!/usr/bin/env bash
# Training on a Slurm cluster, with mmdetection's interface:
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
#   e.g. GPUS=16 bash tools/slurm_train.sh gpu repghost configs/repghostnet/mask-rcnn_repghostnet-1.3x_fpn_1x_coco.py work_dirs/repghost
# GPUS: tasks (one per GPU, default 8); GPUS_PER_NODE (default 8, at most GPUS); CPUS_PER_TASK (default 5);
# SRUN_ARGS: more srun options (split at spaces), e.g. SRUN_ARGS="--time=2-00:00:00 --qos=high".
# PYTHON: the interpreter (default: the checkout's .venv/bin/python if it exists, else python).
set -euo pipefail
USAGE="usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]"
PARTITION=${1:?$USAGE}
JOB_NAME=${2:?$USAGE}
CONFIG=${3:?$USAGE}
WORK_DIR=${4:?$USAGE}
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
read -r -a SRUN_EXTRA <<< "${SRUN_ARGS:-}"
if (( GPUS_PER_NODE > GPUS )); then GPUS_PER_NODE=$GPUS; fi
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$DIR")"
# Interpreter: $PYTHON if set, else the project's environment (tools/setup_env.sh), else python on PATH.
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
    "${SRUN_EXTRA[@]}" \
    "$PYTHON" -u "$DIR/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${@:5}"
