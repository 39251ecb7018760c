"""RL ablations (spec section 8): one variant per command, from an SFT run.

  python -m launch.train --config=launch/configs/ablation.py:scientific,vstar \\
      --workdir=runs/sci/ablation/vstar_s0 --config.init_from=runs/sci/sft_s0

The argument is DATASET,VARIANT with DATASET one of scientific | beauty |
default (the bundled MovieLens) and VARIANT one of

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
for every run before 2026-11-29 04:20 UTC).
"""
from launch.configs import beauty
from launch.configs import default
from launch.configs import scientific
from vstar_jax.decoding.ved import search

DATASETS = {'scientific': scientific.get_config, 'beauty': beauty.get_config,
            'default': default.get_config}

# rollout kind, Sibling-GRPO weight alpha, value loss weight c_V.
VARIANTS = {
    'beam_grpo': ('beam', 0.0, 0.0),
    'beam_sibling': ('beam', 1.0, 0.0),
    'ved_grpo': ('ved', 0.0, 0.5),
    'ved_grpo_paper': ('ved', 0.0, 0.5),
    'vstar': ('ved', 1.0, 0.5),
    'vstar_paper': ('ved', 1.0, 0.5),
}
# VED variants that keep the paper-faithful search (config.rollout defaults);
# the other VED variants use the superset-of-beam VED.
PAPER_VED_VARIANTS = ('ved_grpo_paper', 'vstar_paper')
# config.rollout fields of the superset-of-beam VED: decoding/ved/search.py
# PRESETS['superset'] as `ved_*` fields (its B0 = G is set with G below).
SUPERSET_VED = {f'ved_{name}': value
                for name, value in search.PRESETS['superset'].items()
                if name != 'init_beam'}


PROTOCOLS = ('', 'fresh')


def _fresh_protocol(config) -> None:
  config.data.fresh_windows = 1
  config.rl.num_steps = 300
  config.rl.learning_rate = 3e-5
  config.rl.eval_every = 100
  config.eval.valid_subset = 0             # selection on full validation,
  config.eval.valid_beam = config.eval.beam_width   # at the reporting beam,
  config.eval.validate_start = True        # and the start competes
  # Sibling groups whose rewards barely differ (rank penalties of ~0.01)
  # get no Sibling-GRPO term: chosen on validation (Scientific, seed 0, LR
  # 3e-4: 0.05 vs 0, +3.2% NDCG@10, CI excluding 0; WORKSPACE.md). The
  # paper-faithful variants keep 0 (set in get_config).
  config.rl.sibling_min_std = 0.05


def _ce_control(config) -> None:
  """SFT on RL's prompts with RL's optimisation budget (set the RL fields
  first: this copies them)."""
  config.stages = 'sft'
  config.sft.train_on = 'rl_prompts'
  rl, sft = config.rl, config.sft
  sft.num_steps, sft.num_epochs = rl.num_steps, rl.num_epochs
  for name in ('batch_size', 'learning_rate', 'warmup_steps', 'weight_decay',
               'grad_clip', 'eval_every', 'early_stop_patience'):
    sft[name] = rl[name]
  sft.end_lr_ratio = 0.0                   # RL's policy cosine ends at 0


def get_config(arg: str = 'scientific,vstar'):
  dataset, variant, protocol = (arg.split(',') + ['', ''])[:3]
  if (dataset not in DATASETS or variant not in (*VARIANTS, 'ce') or
      protocol not in PROTOCOLS or arg.count(',') > 2):
    raise ValueError(
        f'--config=ablation.py:{arg}: expected DATASET,VARIANT[,fresh] with '
        f'DATASET in {sorted(DATASETS)} and VARIANT in '
        f'{sorted(VARIANTS) + ["ce"]}')
  config = DATASETS[dataset]()
  if protocol == 'fresh':
    _fresh_protocol(config)
  config.ablation = arg
  if variant == 'ce':
    _ce_control(config)
    return config
  kind, alpha, value_coef = VARIANTS[variant]
  config.stages = 'rl'
  config.rollout.kind = kind
  config.rl.sibling_alpha = alpha
  config.rl.value_coef = value_coef
  num_levels = len(config.rl.step_weights)
  # A reference: --config.rollout.beam_width=W gives VED W's budget too.
  config.rollout.ved_budget = 1 + (num_levels - 1) * config.rollout.get_ref(
      'beam_width')
  if variant in PAPER_VED_VARIANTS:
    config.rl.sibling_min_std = 0.0
  if kind == 'ved' and variant not in PAPER_VED_VARIANTS:
    config.rollout.ved_init_beam = config.rollout.num_candidates
    config.rollout.update(SUPERSET_VED)
    # A value head its rollout never reads (the superset VED at the beam's
    # budget of G) trains on its own: its loss must not move the policy's
    # trunk. Decided at the default width: with --config.rollout.beam_width
    # above G the search explores and reads V; pass
    # --config.model.value_grad_to_trunk=True with it for the paper's setting.
    ved = search.preset('superset', budget=config.rollout.ved_budget,
                        num_candidates=config.rollout.num_candidates)
    if not ved.evaluates_value_at(0, num_levels):
      config.model.value_grad_to_trunk = False
  return config
