#!/usr/bin/env bash
# The device script of 2026-11-28 (one NVIDIA H200, 15 minutes in all): run
# from the repository root on the GPU machine, with $OUT set by the device
# tool and these ignored paths carried: .whl (ml-collections and tensorboardX
# wheels, missing from the GPU image) and gpu_data (see the job list).
#   bash launch/fleets/h200_2026-11-28.sh
# 1. a gate (the smoke SFT + RL run; stops here if the image cannot run us),
# 2. the fleet of launch/fleets/h200_2026-11-28.txt under deadlines,
# 3. every run's results, per-user ranks and logs packed into one tarball,
# 4. the train benchmark with its steps-per-call column (issue 15) in the
#    time left (the GPU is idle by then).
set -u
start=$(date +%s)
OUT=${OUT:?set OUT}
TRAIN_DEADLINE_S=${TRAIN_DEADLINE_S:-380}
EVAL_DEADLINE_S=${EVAL_DEADLINE_S:-440}
TOTAL_S=${TOTAL_S:-585}     # the device call's limit, less packing
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

python3 -m launch.fleet --jobs=launch/fleets/h200_2026-11-28.txt \
    --root=runs/fleet --max_running=20 --train_deadline_s="$TRAIN_DEADLINE_S" \
    --eval_deadline_s="$EVAL_DEADLINE_S" >"$OUT/fleet_driver.log" 2>&1
echo "fleet exit $? after $(( $(date +%s) - start )) s"
tail -5 "$OUT/fleet_driver.log"
(cd runs/fleet && tar czf "$OUT/fleet.tar.gz" --ignore-failed-read \
    fleet_status.json */config.json */results.json */results.user_ranks \
    */eval_*.json */eval_*.user_ranks */metrics.jsonl 2>/dev/null)
left=$(( TOTAL_S - ($(date +%s) - start) ))
if [ "$left" -gt 30 ]; then
  timeout "$left" python3 -m launch.benchmark --suite=train \
      --steps_per_call=1,8,64,256 --noepoch --out="$OUT/train_h200.json" \
      >"$OUT/benchmark.log" 2>&1 || echo "benchmark stopped (see benchmark.log)"
fi
ls -la "$OUT"
