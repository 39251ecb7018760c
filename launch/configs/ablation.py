"""RL ablations (spec section 8): one variant per command, from an SFT run.

  python -m launch.train --config=launch/configs/ablation.py:scientific,vstar \\
      --workdir=runs/sci/ablation/vstar_s0 --config.init_from=runs/sci/sft_s0

The argument is DATASET,VARIANT with DATASET one of scientific | beauty |
default (the bundled MovieLens) and VARIANT one of

  beam_grpo     beam rollouts (width 16, top-G) + GRPO (MiniOneRec style)
  beam_sibling  beam rollouts + GRPO + Sibling-GRPO
  ved_grpo      VED rollouts + GRPO (the value head trains to steer VED)
  vstar         VED + GRPO + Sibling-GRPO + value: the full method, with VED
                as we read the paper (`search.PRESETS['paper']`)
  vstar_superset  the same with the superset-of-beam VED chosen by the VED
                benchmark (`search.PRESETS['superset']`: init beam B0 = G,
                complete leaves scored from their parents' logits, log-prob
                ranking, mctx-style walk, 8 nodes per call); at the beam's
                budget its group is beam search's and every token beyond it
                explores, so at the shared budget below it rolls out exactly
                what beam_sibling does; give every variant more tokens
                (--config.rollout.beam_width=24 or 32) to let it explore

"SFT only" is the SFT run itself. Every variant spends the same decoder-token
budget per prompt: beam width 16 costs 1 + (L-1) 16 tokens and VED's budget
is set to that same number. All other settings are the dataset config's.
"""
from launch.configs import beauty
from launch.configs import default
from launch.configs import scientific

DATASETS = {'scientific': scientific.get_config, 'beauty': beauty.get_config,
            'default': default.get_config}

# rollout kind, Sibling-GRPO weight alpha, value loss weight c_V.
VARIANTS = {
    'beam_grpo': ('beam', 0.0, 0.0),
    'beam_sibling': ('beam', 1.0, 0.0),
    'ved_grpo': ('ved', 0.0, 0.5),
    'vstar': ('ved', 1.0, 0.5),
    'vstar_superset': ('ved', 1.0, 0.5),
}
# config.rollout fields of the superset-of-beam VED (decoding/ved/search.py
# PRESETS['superset'], with B0 = G).
SUPERSET_VED = {
    'ved_evaluate_leaves': False, 'ved_rank': 'logp',
    'ved_selection': 'walk', 'ved_normalize_depth': True,
    'ved_nodes_per_iter': 8,
}


def get_config(arg: str = 'scientific,vstar'):
  dataset, _, variant = arg.partition(',')
  if dataset not in DATASETS or variant not in VARIANTS:
    raise ValueError(
        f'--config=ablation.py:{arg}: expected DATASET,VARIANT with DATASET '
        f'in {sorted(DATASETS)} and VARIANT in {sorted(VARIANTS)}')
  config = DATASETS[dataset]()
  kind, alpha, value_coef = VARIANTS[variant]
  config.stages = 'rl'
  config.rollout.kind = kind
  config.rl.sibling_alpha = alpha
  config.rl.value_coef = value_coef
  num_levels = len(config.rl.step_weights)
  config.rollout.ved_budget = 1 + (num_levels - 1) * config.rollout.beam_width
  if variant == 'vstar_superset':
    config.rollout.ved_init_beam = config.rollout.num_candidates
    config.rollout.update(SUPERSET_VED)
  config.ablation = f'{dataset},{variant}'
  return config
