#!/usr/bin/env bash
# Distributed training with torchrun, as in mmdetection:
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
#   e.g. bash tools/dist_train.sh configs/repghostnet/mask-rcnn_repghostnet-1.3x_fpn_1x_coco.py 8
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT. Without CUDA the processes train on CPU (gloo).
# PYTHON: the interpreter (default: the checkout's .venv/bin/python if it exists, else python).
set -euo pipefail
USAGE="usage: bash tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]"
CONFIG=${1:?$USAGE}
NPROCS=${2:?$USAGE}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$DIR")"
# Interpreter: $PYTHON if set, else the project's environment (tools/setup_env.sh), else python on PATH.
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
"$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROCS" --master_port="$PORT" \
    "$DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"
