"""RL ablations (spec section 8): one variant per command, from an SFT run.

  python -m launch.train --config=launch/configs/ablation.py:scientific,vstar \\
      --workdir=runs/sci/ablation/vstar_s0 --config.init_from=runs/sci/sft_s0

The argument is DATASET[:SIZE],VARIANT with DATASET one of scientific | beauty |
default (the bundled MovieLens with the Quickstart job's SFT settings) and
VARIANT one of (launch/configs/rl_recipes.py)

  beam_grpo     beam rollouts (width 16, top-G) + GRPO (MiniOneRec style)
  beam_sibling  beam rollouts + GRPO + Sibling-GRPO
  ved_grpo      VED rollouts + GRPO (the value head trains to steer VED)
  vstar         VED + GRPO + Sibling-GRPO + value: the full method, with the
                superset-of-beam VED chosen by the VED benchmark
                (`search.PRESETS['superset']`: init beam B0 = G, complete
                leaves scored from their parents' logits, log-prob ranking,
                tree-wide selection of 8 gate-passing expansions per call;
                until 2026-11-29 03:50 UTC the mctx-style walk, with the
                gate after selection); at the beam's budget its
                group is beam search's and every token beyond it explores, so
                at the shared budget below it rolls out exactly what
                beam_sibling does, and its value loss stays off the trunk
                (model.value_grad_to_trunk=False; until 2026-11-29 04:00 UTC
                it reached it); give every variant more tokens
                (--config.rollout.beam_width=24 or 32) to let it explore
  ved_grpo_paper, vstar_paper
                the same with VED as we read the paper
                (`search.PRESETS['paper']`: B0 = 8, leaves evaluated, value
                ranking, tree-wide arg-max). Result folders named `vstar` or
                `ved_grpo` made before 2026-11-29 ran this paper VED (their
                config.json records the rollout.ved_* fields)

  ce            the control RL must beat (issue 12): plain CE (SFT) continued
                from the same checkpoint on the same prompts, with RL's
                steps, batch, learning-rate schedule, clipping and decay

DATASET may carry the SFT run's model size, as the dataset configs take it
(`scientific:tiger,vstar,fresh`); a size that differs from the init_from
run's is a one-line error.

"SFT only" is the SFT run itself. Every variant spends the same decoder-token
budget per prompt: beam width 16 costs 1 + (L-1) 16 tokens and VED's budget
is set to that same number. All other settings are the dataset config's.

A third field `fresh` selects the fresh-prompt protocol (issue 12):

  --config=launch/configs/ablation.py:scientific,vstar,fresh \
      --config.init_from=runs/sci/sft_fresh_s0

where the SFT run was trained with --config.data.fresh_windows=1 (the last
training window of each user withheld); RL (and the CE control) read those
withheld windows, 300 steps at LR 3e-5, validated every 100 steps on the full
validation split at the reporting beam, the start (step 0) included, and
sibling groups with reward std below 0.05 get no Sibling-GRPO term
(`rl.sibling_min_std`, chosen on validation; 0 for the paper variants and
for every run before 2026-11-29 04:20 UTC). The Sibling-GRPO weight stays
the paper's 1; on Scientific, validation prefers 0.3 (3 seeds) and plain
GRPO most (`--config.rl.sibling_alpha`; WORKSPACE, fifth stop).
"""
from launch.configs import beauty
from launch.configs import common
from launch.configs import default
from launch.configs import rl_recipes
from launch.configs import scientific

DATASETS = {'scientific': scientific.get_config, 'beauty': beauty.get_config,
            'default': lambda size: default.movielens_config()}
PROTOCOLS = ('', 'fresh')


def get_config(arg: str = 'scientific,vstar'):
  dataset, variant, protocol = (arg.split(',') + ['', ''])[:3]
  dataset, _, size = dataset.partition(':')
  if (dataset not in DATASETS or
      variant not in (*rl_recipes.VARIANTS, 'ce') or
      protocol not in PROTOCOLS or arg.count(',') > 2 or
      size not in ('', *common.MODEL_SIZES) or
      (size and dataset == 'default')):
    raise ValueError(
        f'--config=ablation.py:{arg}: expected DATASET[:SIZE],VARIANT[,fresh]'
        f' with DATASET in {sorted(DATASETS)}, SIZE (not for default) in '
        f'{sorted(common.MODEL_SIZES)} and VARIANT in '
        f'{sorted(rl_recipes.VARIANTS) + ["ce"]}')
  config = DATASETS[dataset](size or 'cpu')
  config.stages = 'rl'
  if protocol == 'fresh':
    rl_recipes.fresh_protocol(config)
  config.ablation = arg
  if variant == 'ce':
    rl_recipes.ce_control(config)
  else:
    rl_recipes.apply_variant(config, variant)
  return config
