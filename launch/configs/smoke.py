"""Smoke test config: the synthetic toy dataset, a tiny model, seconds.

  python -m launch.train --config=launch/configs/smoke.py --workdir=/tmp/smoke
  python -m launch.train --config=launch/configs/smoke.py --workdir=/tmp/rl \
      --config.stages=sft,rl
"""
from launch.configs import common


def get_config():
  config = common.base_config()
  config.log_every = 2
  config.data.dir = 'testdata/synthetic'
  config.data.name = 'toy'
  config.data.index = 'testdata/synthetic/toy.index.json'
  config.data.max_history = 5
  config.model.width = 32
  config.model.num_layers = 1
  config.model.num_heads = 2
  config.model.value_width = 16
  config.sft.batch_size = 16
  config.sft.num_epochs = 0
  config.sft.num_steps = 8
  config.sft.warmup_steps = 2
  config.sft.eval_every = 4
  config.eval.beam_width = 20
  config.eval.valid_beam = 10
  config.eval.valid_subset = 0
  config.eval.batch_size = 16
  config.checkpoint.every_steps = 4
  config.rollout.num_candidates = 6
  config.rollout.beam_width = 6
  config.rollout.ved_init_beam = 2
  config.rl.batch_size = 8
  config.rl.num_steps = 3
  config.rl.eval_every = 2
  config.rl.value_warmup_steps = 1
  return config
