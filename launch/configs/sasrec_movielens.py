"""SASRec on the bundled MovieLens ml-latest-small, leave-one-out.

  python -m launch.train --config=launch/configs/sasrec_movielens.py \
      --workdir=runs/sasrec_movielens

88,059 training windows: 343 steps per epoch at batch 256.
"""
from launch.configs import sasrec_common


def get_config():
  return sasrec_common.sasrec_config('movielens', num_epochs=50)
