#!/usr/bin/env bash
# Trains on several GPU nodes: one launch.train process per node, each
# driving all of its node's GPUs; no SLURM or torchrun needed.
#
# One node (e.g. 8xH100) needs none of this: the default mesh already puts
# every local GPU on the 'data' axis:
#   python -m launch.train --config=launch/configs/tpu_pod.py:base --workdir=...
#
# Several nodes, started from one machine over ssh (the checkout, its .venv
# with a CUDA jax, e.g. `pip install 'jax[cuda12]==<pinned version>'`, and
# ../shared/data must exist at the same path on every node):
#   HOSTS="gpu0 gpu1" WORKDIR=/shared/runs/beauty launch/gpu_multinode.sh \
#       --config=launch/configs/tpu_pod.py:base [--config.a.b=value ...]
#
# Or by hand on each node (same command, its own NODE_RANK):
#   COORDINATOR=gpu0:12345 NUM_NODES=2 NODE_RANK=0 WORKDIR=/shared/runs/beauty \
#       launch/gpu_multinode.sh --config=...
#
# Node 0 hosts the jax.distributed coordinator at COORDINATOR (default
# <first host>:12345; the port must be reachable from all nodes). WORKDIR
# must be shared by all nodes (NFS or similar): every node writes its part of
# each checkpoint, node 0 alone writes logs and results. Exit code 75 means
# a node got SIGTERM and all nodes saved a checkpoint at one agreed step:
# rerun the same command to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${WORKDIR:?set WORKDIR to a directory shared by all nodes}"
PYTHON=${PYTHON:-.venv/bin/python}

if [ -n "${HOSTS:-}" ]; then              # fan out over ssh, then wait
  read -r -a hosts <<< "$HOSTS"
  coordinator=${COORDINATOR:-${hosts[0]}:12345}
  args=$(printf ' %q' "$@")
  pids=()
  for rank in "${!hosts[@]}"; do
    ssh "${hosts[$rank]}" "cd $(printf %q "$PWD") && \
        COORDINATOR=$coordinator NUM_NODES=${#hosts[@]} NODE_RANK=$rank \
        WORKDIR=$(printf %q "$WORKDIR") PYTHON=$(printf %q "$PYTHON") \
        launch/gpu_multinode.sh$args" &
    pids+=($!)
  done
  status=0
  for pid in "${pids[@]}"; do
    wait "$pid" || status=$?
  done
  exit "$status"
fi

: "${COORDINATOR:?set COORDINATOR=host:port of node 0 (or HOSTS)}"
: "${NUM_NODES:?set NUM_NODES}" "${NODE_RANK:?set NODE_RANK}"
exec "$PYTHON" -m launch.train --workdir="$WORKDIR" \
    --coordinator_address="$COORDINATOR" --num_processes="$NUM_NODES" \
    --process_id="$NODE_RANK" "$@"
