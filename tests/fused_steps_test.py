"""config.steps_per_call: N steps per jitted call give the parameters of one
step per call (SFT and RL, unsplit and over the 8-device data mesh), trace
once per call size, keep cadences on call boundaries and resume exactly."""
import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from vstar_jax import errors
from vstar_jax.train import loop

# Unsplit: a 1-device data axis (the 8 devices hold replicas on 'model').
MESHES = {'unsplit': {'mesh.data': 1, 'mesh.model': 8},
          'data8': {'mesh.data': 8, 'mesh.model': 1}}

# 8 optimizer steps; one validation, at the end, so the stage's best
# parameters are its final ones. Checkpoints every 8 steps (a multiple of
# N=4): saving costs seconds and only the resume test restores one.
SFT = {'stages': 'sft', 'log_every': 4, 'checkpoint.every_steps': 8,
       'sft.num_steps': 8, 'sft.eval_every': 8}
# A value warm-up step on top: 9 steps, i.e. two calls of 4 and a single
# step, which exercises the call of 1 that fills the tail.
RL = {'stages': 'sft,rl', 'log_every': 4, 'checkpoint.every_steps': 8,
      'rl.num_steps': 8, 'rl.value_warmup_steps': 1, 'rl.eval_every': 12,
      'rollout.kind': 'beam'}


def _counted(step, traces: list):
  def wrapped(*args):
    traces.append(1)
    return step(*args)
  return wrapped


def _train_stage(smoke_config, workdir, name: str, **overrides):
  """Runs one stage from a fresh model; (final params, traces, summary)."""
  cfg = smoke_config(**overrides)
  run = loop.prepare_run(cfg, str(workdir))
  if name == 'sft':
    stage = loop.sft_stage(run)
  else:
    stage = loop.rl_stage(run, jax.jit(run.model.init)(run.keys['init']))
  traces = []
  stage = stage.__class__(**{**stage.__dict__,
                             'step': _counted(stage.step, traces)})
  params, summary = loop.run_stage(run, stage)
  run.writer.close()
  return jax.device_get(params), len(traces), summary


def _log_rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


# The generative-model levers of issue 14 that change the SFT step.
LEVERS = {'model.item_id_embedding': True, 'sft.label_smoothing': 0.1}

# name: (stage, overrides, steps run, traces of the N=4 run: calls of 4 and
# of 1).
STAGES = {'sft': ('sft', SFT, 8, 1),
          'sft_levers': ('sft', {**SFT, **LEVERS}, 8, 1),
          'rl_levers': ('rl', {**RL, **LEVERS}, 9, 2)}


# The plain SFT step and the levers' step each meet both meshes. RL runs
# once, with the levers, sharded (its item table split over 'data'): an RL
# case costs two of the suite's largest compiles, and the fused loop does
# not depend on which step it scans.
_CASES = [('sft', 'unsplit'), ('sft_levers', 'data8'), ('rl_levers', 'data8')]


@pytest.mark.parametrize('name,mesh', [
    pytest.param(name, mesh, marks=() if name == 'sft' else pytest.mark.slow)
    for name, mesh in _CASES])
def test_four_steps_per_call_equal_one(tmp_path, name, mesh, smoke_config):
  stage, overrides, steps, traces = STAGES[name]
  one, one_traces, _ = _train_stage(smoke_config, tmp_path / 'n1', stage,
                                    **overrides, **MESHES[mesh],
                                    steps_per_call=1)
  four, four_traces, summary = _train_stage(
      smoke_config, tmp_path / 'n4', stage, **overrides, **MESHES[mesh],
      steps_per_call=4)
  assert summary['steps'] == steps
  assert (one_traces, four_traces) == (1, traces)   # once per call size
  chex.assert_trees_all_close(four, one, rtol=1e-4, atol=1e-6)
  # The logged means of the same per-step metrics, at the same steps.
  loss = f'{stage}/loss'
  logged = lambda run: {r['step']: r[loss] for r in _log_rows(tmp_path / run)
                        if loss in r}
  assert sorted(logged('n4')) == sorted(logged('n1')) == sorted({4, 8, steps})
  for step, value in logged('n4').items():
    np.testing.assert_allclose(value, logged('n1')[step], rtol=1e-4)


def test_resume_mid_run_with_four_steps_per_call(tmp_path, smoke_config):
  overrides = dict(SFT, steps_per_call=4, **{'sft.eval_every': 4,
                                             'checkpoint.every_steps': 4})
  full = loop.train_and_evaluate(
      smoke_config(**overrides),
      str(tmp_path / 'full'))
  part = tmp_path / 'part'
  first = loop.train_and_evaluate(smoke_config(
      **overrides, stop_after_steps=4), str(part))
  assert first['stages']['sft'] == {'steps': 4, 'interrupted': True}
  resumed = loop.train_and_evaluate(
      smoke_config(**overrides), str(part))
  assert resumed['metrics'] == full['metrics']
  keep = lambda rows: [{k: v for k, v in r.items() if not k.endswith(
      ('steps_per_s', 'examples_per_s', 'eta_s'))} for r in rows]
  assert keep(_log_rows(part)) == keep(_log_rows(tmp_path / 'full'))


@pytest.mark.parametrize('field,value', [
    ('log_every', 6), ('stop_after_steps', 2), ('checkpoint.every_steps', 10),
    ('sft.eval_every', 2), ('sft.num_steps', 10), ('rl.eval_every', 2),
    ('rl.num_steps', 3)])
def test_cadences_must_be_multiples_of_steps_per_call(field, value,
                                                     smoke_config):
  ok = dict(SFT, **{'stages': 'sft,rl', 'rl.eval_every': 4,
                    'rl.num_steps': 8, 'steps_per_call': 4})
  smoke_config(**ok)
  with pytest.raises(errors.ConfigError) as e:
    smoke_config(**{**ok, field: value})
  assert str(e.value) == (f'config.{field}={value} is not a multiple of '
                          'config.steps_per_call=4')


def test_stages_not_run_are_not_checked(smoke_config):
  cfg = smoke_config(**SFT, steps_per_call=4, **{'rl.eval_every': 3})
  assert cfg.steps_per_call == 4
  with pytest.raises(errors.ConfigError, match='must be >= 1'):
    smoke_config(steps_per_call=0)


@pytest.mark.slow
def test_bad_cadence_flag_one_line_exit_1_nothing_written(tmp_path,
                                                         repo_root):
  workdir = tmp_path / 'w'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  out = subprocess.run(
      [sys.executable, '-m', 'launch.train',
       '--config=launch/configs/smoke.py', f'--workdir={workdir}',
       '--config.steps_per_call=4'],
      cwd=repo_root, env=env, capture_output=True, text=True,
      timeout=300)
  assert out.returncode == 1, out.stderr[-2000:]
  assert out.stderr.strip().splitlines()[-1] == (
      'train: error: config.log_every=2 is not a multiple of '
      'config.steps_per_call=4')
  assert 'Traceback' not in out.stderr
  assert not workdir.exists()
