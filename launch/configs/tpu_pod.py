"""Amazon Beauty on a TPU pod slice (e.g. v5e-64): larger model, FSDP.

Every host of the slice runs the same command (launch/tpu_pod.sh does it
with `gcloud compute tpus tpu-vm ssh --worker=all`):

  python -m launch.train --config=launch/configs/tpu_pod.py:base \\
      --workdir=/mnt/shared/runs/beauty_pod --distributed

`:SIZE` picks a row of common.MODEL_SIZES ('tiger', 'base', 'large'). The
mesh is every chip of the slice on 'data'; global batches must divide by the
chip count (64 on v5e-64) and are split evenly over the hosts, each of which
reads only its rows. FSDP splits every parameter (and its Adam moments) of
>= 2^14 elements over the chips. The work directory must be one POSIX
directory that all hosts share (NFS, Filestore, or a bucket mounted with
gcsfuse; gs:// URLs are not supported): every host writes its part of each
checkpoint, and only host 0 writes logs and results.

Batch sizes are scaled up from the CPU configs and the learning rates kept,
so treat this as a starting point, not a tuned recipe.
"""
from launch.configs import beauty


def get_config(size: str = 'base'):
  config = beauty.get_config(size)
  config.model.dtype = 'bfloat16'
  config.mesh.data = -1
  config.mesh.model = 1
  config.mesh.fsdp = True
  config.sft.batch_size = 2048          # 32 per chip on 64 chips
  config.sft.warmup_steps = 100
  config.sft.eval_every = 128           # about two epochs
  config.checkpoint.every_steps = 128
  config.log_every = 16
  config.rl.batch_size = 512            # 8 prompts (x G candidates) per chip
  config.rl.eval_every = 25
  config.eval.batch_size = 1024
  config.eval.valid_subset = 0          # all users: cheap on a pod
  config.embedding_cache_dir = '/tmp/vstar_embeddings'   # per host
  return config
