#!/usr/bin/env bash
# The seed-003 settings: lr 5e-5, batch 2, 3000 train / 500 val iterations per epoch, W&B on.
# Extra arguments pass through, e.g. ./run_sequential_attention.sh --device cuda --loss.done_weight=5
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-.venv/bin/python}"
exec "$PY" -m runner.train --config configs/sequential_attention.yaml --wandb \
  --optim.lr=5e-5 --train.batch_size=2 --train.max_train_iters=3000 --train.max_val_iters=500 "$@"
