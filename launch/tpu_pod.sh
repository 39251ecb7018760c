#!/usr/bin/env bash
# Trains on a TPU VM pod slice: the same launch.train command on every host.
#
#   export TPU_NAME=vstar-v5e-64 ZONE=us-west4-a      # PROJECT=... optional
#   launch/tpu_pod.sh setup                 # once: code, venv, jax[tpu], data
#   WORKDIR=/mnt/shared/runs/beauty_pod launch/tpu_pod.sh train \
#       --config=launch/configs/tpu_pod.py:base [--config.a.b=value ...]
#
# `setup` copies this checkout (git HEAD) to ~/vstar_jax on every host,
# creates its venv with launch/setup.sh plus jax[tpu] at the pinned version,
# and copies DATA_DIR (default ../shared/data) to ~/shared/data, where the
# configs look for it. `train` runs, on all hosts at once,
#   gcloud compute tpus tpu-vm ssh $TPU_NAME --worker=all --command='...'
# with `python -m launch.train ... --distributed`: jax.distributed.initialize()
# reads the slice topology from the TPU metadata, every host reads its share
# of each batch, and only host 0 prints logs and writes results. WORKDIR must
# be one directory shared by all hosts (NFS, Filestore or gcsfuse), since
# every host writes its part of each checkpoint.
#
# Preemption: SIGTERM makes every host save a checkpoint at one agreed step
# and exit with code 75; run `train` again with the same WORKDIR to resume
# (after recreating the slice if it was reclaimed).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
gcloud_tpu=(gcloud compute tpus tpu-vm)
where=("$TPU_NAME" "--zone=$ZONE" ${PROJECT:+"--project=$PROJECT"})

on_all_hosts() {
  "${gcloud_tpu[@]}" ssh "${where[@]}" --worker=all --command="$1"
}

case "${1:-}" in
  setup)
    jax_version=$(sed -n 's/^jax==//p' requirements.txt)
    archive=$(mktemp --suffix=.tar.gz)
    git archive --format=tar.gz -o "$archive" HEAD
    "${gcloud_tpu[@]}" scp "${where[@]}" --worker=all "$archive" \
        "$TPU_NAME:vstar_jax.tar.gz"
    rm -f "$archive"
    on_all_hosts "mkdir -p vstar_jax shared && tar xzf vstar_jax.tar.gz \
        -C vstar_jax && cd vstar_jax && bash launch/setup.sh && \
        .venv/bin/pip install -q 'jax[tpu]==$jax_version'"
    "${gcloud_tpu[@]}" scp "${where[@]}" --worker=all --recurse \
        "${DATA_DIR:-../shared/data}" "$TPU_NAME:shared/"
    ;;
  train)
    shift
    : "${WORKDIR:?set WORKDIR to a directory shared by all hosts}"
    args=$(printf ' %q' "$@")
    on_all_hosts "cd vstar_jax && .venv/bin/python -m launch.train \
        --workdir=$(printf %q "$WORKDIR") --distributed$args"
    ;;
  *)
    echo "usage: $0 setup | train --config=... [--config.a.b=value ...]" >&2
    exit 2
    ;;
esac
