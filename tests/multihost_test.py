"""A real two-process jax.distributed run of launch.train on localhost.

Two processes with 4 fake CPU devices each form one 8-device mesh (gloo
collectives); each reads its half of every batch. Two SFT steps and the
evaluations must match the single-process 8-device run, and only process 0
writes logs and results.
"""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from vstar_jax.train import loop

# One ranked-list length: the final evaluation reuses the compiled search.
OVERRIDES = {'sft.num_steps': 2, 'sft.eval_every': 2, 'log_every': 1,
             'eval.beam_width': 10}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, repo_root, smoke_config,
                                  sft_losses):
  assert jax.device_count() == 8     # the reference: one process, 8 devices
  work = tmp_path / 'two'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  port = _free_port()
  logs = [(tmp_path / f'p{i}.out', tmp_path / f'p{i}.err') for i in range(2)]
  procs = []
  for i, (out, err) in enumerate(logs):
    # A persistent compilation cache lets the final evaluation find the
    # search compiled for the validation one.
    env_i = dict(env, JAX_COMPILATION_CACHE_DIR=str(tmp_path / f'cache{i}'),
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
    # Output to files: a full pipe would stall a process meanwhile.
    with open(out, 'w') as out_f, open(err, 'w') as err_f:
      procs.append(subprocess.Popen(
          [sys.executable, '-m', 'launch.train',
           '--config=launch/configs/smoke.py', f'--workdir={work}',
           *[f'--config.{k}={v}' for k, v in OVERRIDES.items()],
           f'--coordinator_address=localhost:{port}', '--num_processes=2',
           f'--process_id={i}'],
          cwd=repo_root, env=env_i, stdout=out_f, stderr=err_f))
  try:
    # The single-process reference runs while the two processes work.
    full = loop.train_and_evaluate(smoke_config(**OVERRIDES),
                                   str(tmp_path / 'one'))
    codes = [p.wait(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  outs = [(out.read_text(), err.read_text()) for out, err in logs]
  for code, (_, err) in zip(codes, outs):
    assert code == 0, err[-3000:]
  assert '| sft | test |' in outs[0][0]
  assert '| sft | test |' not in outs[1][0]      # only process 0 reports
  results = json.loads((work / 'results.json').read_text())
  assert results['mesh'] == {'shape': {'data': 8, 'model': 1}, 'fsdp': False,
                             'processes': 2}
  assert full['mesh']['processes'] == 1
  for split in ('valid', 'test'):
    got, want = results['metrics']['sft'][split], full['metrics']['sft'][split]
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], list(want.values()),
                               rtol=1e-6, atol=1e-6)
  rows = [json.loads(l) for l in open(work / 'metrics.jsonl')]
  assert [r['step'] for r in rows] == [1, 2, 2]  # written once, by process 0
  two, one = (sft_losses(w) for w in (work, tmp_path / 'one'))
  assert two.keys() == one.keys() and len(two) >= 10
  np.testing.assert_allclose([two[k] for k in one], list(one.values()),
                             rtol=1e-5)
