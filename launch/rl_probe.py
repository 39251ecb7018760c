r"""Probes a run's parameters on RL's prompt pool and on held-out prompts.

  python -m launch.rl_probe --workdir=runs/sci/fresh_vstar_s0            # after RL
  python -m launch.rl_probe --workdir=runs/sci/fresh_vstar_s0 --params=start

--params=best probes the run's selected parameters (the last stage's best
checkpoint); --params=start the parameters it started from (the best SFT
checkpoint of config.init_from). Both use the run's own rollout (beam search
of config.rollout.beam_width for runs without RL) on the same fixed prompt
sets (vstar_jax/eval/rl_probe.py). Writes WORKDIR/probe_<params>.json (or
--out) and prints one line per prompt set.
"""
import os

from absl import app
from absl import flags
import jax

from launch import runtime
from launch.configs import common
from vstar_jax import errors
from vstar_jax import experiment
from vstar_jax.data import files
from vstar_jax.eval import rl_probe
from vstar_jax.train import evaluation
from vstar_jax.train import recommender

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.',
                               required=True)
_PARAMS = flags.DEFINE_enum('params', 'best', ['best', 'start'],
                            'The run\'s selected parameters, or its start.')
_NUM_PROMPTS = flags.DEFINE_integer('num_prompts', 2000,
                                    'Prompts per set (pool, valid).',
                                    lower_bound=1)
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Prompts per rollout call.',
                              lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Prompt subsets and rollout keys.')
_OUT = flags.DEFINE_string('out', None, 'JSON output; default '
                           'WORKDIR/probe_<params>.json.')


def _params(config, model, workdir: str):
  if _PARAMS.value == 'best':
    return evaluation.restore_params(config, model, workdir,
                                     config.stage_list[-1])
  if not config.init_from:
    raise errors.ConfigError(f'{workdir}: --params=start needs a run started '
                             'from another (config.init_from is empty)')
  return evaluation.restore_params(config, model, config.init_from, 'sft')


def _probe():
  workdir = _WORKDIR.value
  config = evaluation.load_run_config(workdir, common.base_config())
  exp = experiment.load_experiment(config, workdir)
  model = recommender.from_config(config, exp)
  if model.kind != 'sid':
    raise errors.ConfigError(f'{workdir}: rollouts need a SID model, got '
                             f'{model.kind!r}')
  params = _params(config, model, workdir)
  try:
    out = rl_probe.probe(config, exp, model, params,
                         num_prompts=_NUM_PROMPTS.value,
                         batch_size=_BATCH.value, seed=_SEED.value)
  except ValueError as e:
    raise errors.ConfigError(f'{workdir}: {e}') from None
  out.update(workdir=workdir, params=_PARAMS.value,
             git_commit=evaluation.git_commit())
  path = _OUT.value or os.path.join(workdir, f'probe_{_PARAMS.value}.json')
  files.write_json(path, out)
  for name in rl_probe.PROMPT_SETS:
    m = out[name]
    line = ', '.join(f'{k}={m[k]:.4f}' for k in (
        'target_in_group', 'zero_adv_frac', 'reward', 'ndcg@10') if k in m)
    print(f'{name} ({m["prompts"]} prompts): {line}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  jax.config.update('jax_threefry_partitionable', True)
  runtime.run_main('rl_probe', _probe)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
