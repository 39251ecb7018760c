"""Fault tolerance of launch.train, through the binary in subprocesses.

One run is preempted (SIGTERM: checkpoint, exit 75), resumed and killed
(SIGKILL) right after its next checkpoint, has that checkpoint damaged, and
resumes from the one before: it must end exactly like an uninterrupted run.
Every process uses the 8 fake devices of the test session, with FSDP on, so
sharded checkpoints are saved and restored too.
"""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import pytest

from vstar_jax.train import loop

OVERRIDES = {'mesh.fsdp': True, 'mesh.fsdp_min_size': 256,
             'checkpoint.every_steps': 2}


_STARTED = []


@pytest.fixture(autouse=True)
def _kill_leftovers():
  """A failed assertion must not leave a training process behind."""
  yield
  while _STARTED:
    proc = _STARTED.pop()
    if proc.poll() is None:
      proc.kill()
      proc.wait()


class _Run:
  """launch.train on the smoke config in a subprocess; output to files (a
  full pipe would stall it while the test does other work)."""

  def __init__(self, repo_root: pathlib.Path, workdir: pathlib.Path,
               log: pathlib.Path):
    # 8 devices, as in this process (conftest). The runs and the in-process
    # reference compile the same programs: the session's persistent
    # compilation cache (conftest, inherited through os.environ) spares the
    # later ones.
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS='--xla_force_host_platform_device_count=8')
    flags = [f'--config.{k}={v}' for k, v in OVERRIDES.items()]
    self._out, self._err = log.with_suffix('.out'), log.with_suffix('.err')
    with open(self._out, 'w') as out, open(self._err, 'w') as err:
      self.proc = subprocess.Popen(
          [sys.executable, '-m', 'launch.train',
           '--config=launch/configs/smoke.py', f'--workdir={workdir}',
           *flags], cwd=repo_root, env=env,
          stdout=out, stderr=err)
    _STARTED.append(self.proc)

  def wait(self, timeout: float = 300.) -> tuple[int, str, str]:
    """(exit code, stdout, stderr)."""
    code = self.proc.wait(timeout=timeout)
    return code, self._out.read_text(), self._err.read_text()

  def wait_for(self, condition, timeout: float = 240.) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
      assert self.proc.poll() is None, self._err.read_text()[-3000:]
      assert time.monotonic() < deadline, 'timed out'
      time.sleep(0.02)


def _steps(workdir: pathlib.Path) -> list[int]:
  latest = workdir / 'checkpoints' / 'sft' / 'latest'
  if not latest.is_dir():
    return []
  return sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_sigterm_sigkill_and_corrupt_checkpoint_resume_exactly(
    tmp_path, repo_root, smoke_config, sft_losses):
  assert jax.device_count() == 8     # the reference runs on the same mesh
  work = tmp_path / 'run'
  # Preemption notice as soon as the run has started: handled after a step.
  run = _Run(repo_root, work, tmp_path / 'sigterm')
  run.wait_for((work / 'config.json').exists)
  run.proc.send_signal(signal.SIGTERM)
  code, _, err = run.wait()
  assert code == 75, err[-3000:]
  saved = re.search(r'preemption notice \(SIGTERM\): checkpoint saved at '
                    r'step (\d+)', err)
  assert saved, err[-3000:]
  preempted_at = int(saved.group(1))
  assert 1 <= preempted_at < 8 and _steps(work)[-1] == preempted_at
  assert not (work / 'results.json').exists()

  # Resume; SIGKILL as soon as a newer checkpoint is complete.
  run = _Run(repo_root, work, tmp_path / 'sigkill')
  run.wait_for(lambda: _steps(work)[-1] > preempted_at)
  run.proc.kill()
  assert run.wait()[0] == -signal.SIGKILL
  assert not (work / 'results.json').exists()

  # Damage the newest checkpoint: the next run falls back to the previous.
  *_, previous, newest = _steps(work)
  step_dir = work / 'checkpoints' / 'sft' / 'latest' / str(newest)
  for f in step_dir.glob('state/**/d/*'):
    with open(f, 'r+b') as fh:
      fh.truncate(3)
  run = _Run(repo_root, work, tmp_path / 'resume')
  # The uninterrupted reference runs here while that run goes on.
  config = smoke_config(**OVERRIDES)
  full = loop.train_and_evaluate(config, str(tmp_path / 'full'))
  code, out, err = run.wait()
  assert code == 0, err[-3000:]
  corrupt = [l for l in err.splitlines() if 'is corrupt' in l]
  assert len(corrupt) == 1 and f'latest/{newest} is corrupt' in corrupt[0]
  assert f'resuming from step {previous}' in corrupt[0]
  assert '| sft | test |' in out

  results = json.loads((work / 'results.json').read_text())
  assert results['metrics'] == json.loads(json.dumps(full['metrics']))
  assert results['mesh'] == {'shape': {'data': 8, 'model': 1}, 'fsdp': True,
                             'processes': 1}
  # Log windows cut by the preemption average fewer steps; all others match.
  log_every = config.log_every
  cut = {preempted_at, -(-preempted_at // log_every) * log_every}
  resumed, uninterrupted = (
      {k: v for k, v in sft_losses(w).items() if k[0] not in cut}
      for w in (work, tmp_path / 'full'))
  assert len(resumed) >= 20 and resumed == uninterrupted

  # The 8-device FSDP checkpoint re-evaluates on one device.
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  ev = subprocess.run([sys.executable, '-m', 'launch.evaluate',
                       f'--workdir={work}'],
                      cwd=repo_root,
                      env=dict(env, JAX_PLATFORMS='cpu'), capture_output=True,
                      text=True, timeout=300)
  assert ev.returncode == 0, ev.stderr[-3000:]
  again = json.loads((work / 'eval_sft_beam20.json').read_text())
  assert again['metrics'] == results['metrics']['sft']
