"""SASRec on Amazon'18 Industrial & Scientific, leave-one-out.

  python -m launch.train --config=launch/configs/sasrec_scientific.py \
      --workdir=runs/sasrec_scientific

33,541 training windows: 131 steps per epoch at batch 256. Compare with
RecBole SASRec (spec section 10): test R@10 .1010, N@10 .0640.
"""
from launch.configs import sasrec_common


def get_config():
  return sasrec_common.sasrec_config('scientific', num_epochs=50)
