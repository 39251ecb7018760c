"""SASRec on Amazon'14 Beauty, leave-one-out.

  python -m launch.train --config=launch/configs/sasrec_beauty.py \
      --workdir=runs/sasrec_beauty

131,413 training windows: 513 steps per epoch at batch 256. Compare with
RecBole SASRec (spec section 10): test R@10 .0821, N@10 .0414; a tuned SASRec
in the literature: R@10 .0740, N@10 .0423.
"""
from launch.configs import sasrec_common


def get_config():
  return sasrec_common.sasrec_config('beauty', num_epochs=30)
