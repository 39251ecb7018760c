#!/usr/bin/env bash
# The device script (one NVIDIA H200, ~15 minutes in all): run from the
# repository root on the GPU machine, with $OUT set by the device tool and
# these ignored paths carried: .whl (ml-collections and tensorboardX wheels,
# missing from the GPU image) and gpu_data (see the job list).
#   bash launch/fleets/h200.sh launch/fleets/h200_next.txt [MAX_RUNNING]
# 1. a gate (the smoke SFT + RL run; stops here if the image cannot run us),
# 2. the train benchmark's steps-per-call column (issue 15), short, first
#    (BENCHMARK=0 skips it; the 2026-11-28 lease ran out before it, when it
#    ran after the fleet),
# 3. the fleet of the job list under deadlines (chains need SFT ~4 min + RL
#    ~3 min each on a shared H200: 12 at a time by default, not 20),
# 4. every run's results, per-user ranks and logs packed into one tarball.
set -u
start=$(date +%s)
OUT=${OUT:?set OUT}
JOBS=${1:?usage: h200.sh JOBS_FILE [MAX_RUNNING]}
MAX_RUNNING=${2:-12}
TRAIN_DEADLINE_S=${TRAIN_DEADLINE_S:-330}
EVAL_DEADLINE_S=${EVAL_DEADLINE_S:-400}
BENCHMARK=${BENCHMARK:-1}
[ -f "$JOBS" ] || { echo "h200.sh: no job list $JOBS"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=/tmp/site:$PWD
mkdir -p ../shared
[ -e ../shared/data ] || ln -s "$PWD/gpu_data" ../shared/data
nvidia-smi -L
python3 -c 'import jax; print(jax.__version__, jax.devices())'
nvidia-cuda-mps-control -d || echo 'no MPS daemon'
export XLA_PYTHON_CLIENT_PREALLOCATE=false

timeout 100 python3 -m launch.train --config=launch/configs/smoke.py \
    --workdir=/tmp/gate --config.stages=sft,rl \
    --config.rl.item_embeddings=gpu_data/toy_item_emb.npy >"$OUT/gate.log" 2>&1 || {
  echo "gate failed"; tail -40 "$OUT/gate.log"; exit 3; }
echo "gate passed in $(( $(date +%s) - start )) s"

if [ "$BENCHMARK" = 1 ]; then
  timeout 75 python3 -m launch.benchmark --suite=train --ablations=false --noprofile \
      --steps_per_call=1,8,64,256 --noepoch --out="$OUT/train_h200.json" \
      >"$OUT/benchmark.log" 2>&1 || echo "benchmark stopped (see benchmark.log)"
fi

python3 -m launch.fleet --jobs="$JOBS" \
    --root=runs/fleet --max_running="$MAX_RUNNING" --train_deadline_s="$TRAIN_DEADLINE_S" \
    --eval_deadline_s="$EVAL_DEADLINE_S" >"$OUT/fleet_driver.log" 2>&1
echo "fleet exit $? after $(( $(date +%s) - start )) s"
tail -5 "$OUT/fleet_driver.log"
(cd runs/fleet && tar czf "$OUT/fleet.tar.gz" --ignore-failed-read \
    fleet_status.json */config.json */results.json */results.user_ranks \
    */eval_*.json */eval_*.user_ranks */metrics.jsonl 2>/dev/null)
ls -la "$OUT"
