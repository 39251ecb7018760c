"""Runs many `launch.train` jobs at once on one machine, under a deadline.

  python -m launch.fleet --jobs=launch/fleets/h200_2026-11-26.txt \\
      --root=runs/fleet --max_running=16 --train_deadline_s=420

Small models leave an accelerator mostly idle, so a sweep finishes sooner
when its runs share the device (on NVIDIA GPUs start the MPS daemon first,
`nvidia-cuda-mps-control -d`, and set XLA_PYTHON_CLIENT_PREALLOCATE=false so
that each process takes only what it uses). Each job line of the jobs file is

  NAME [after=DEP] LAUNCH_TRAIN_ARGS...

and runs `python -m launch.train --workdir=ROOT/NAME LAUNCH_TRAIN_ARGS`
(plus `--config.init_from=ROOT/DEP` once DEP has written its results.json;
if DEP fails, NAME is skipped). Lines are started in file order, at most
--max_running at a time. At --train_deadline_s every job still running gets
SIGTERM, which makes launch.train checkpoint and exit 75; then the best
checkpoint of each stopped job is evaluated (`launch.evaluate`) until
--eval_deadline_s, so a cut-short run still reports test metrics selected on
validation (ROOT/NAME/eval_STAGE_beamK.json). ROOT/fleet_status.json lists
every job's outcome (with --skip_finished, a job whose workdir holds its
results.json when the fleet comes to start it is 'ok (finished before)' and
is not run again, so several fleets can share one ROOT and jobs file, and a job
whose workdir's fleet_job.pid names a live process, i.e. one another fleet
is running, is 'skipped (running, pid N)'); the exit
status is 2 when any job did not finish on its
own (failed, skipped, stopped or never started).

Before anything starts, every job's config is parsed and checked as
launch.train would (`config_errors`); a bad one ends the fleet with exit
status 1, one line per bad job, nothing run. --check_only stops there.
"""
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Optional

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import runtime
from vstar_jax import errors

_JOBS = flags.DEFINE_string('jobs', None, 'Jobs file (see module doc).',
                            required=True)
_ROOT = flags.DEFINE_string('root', None, 'Folder of the job workdirs '
                            '(required unless --check_only).')
_MAX_RUNNING = flags.DEFINE_integer('max_running', 4, 'Jobs at a time.',
                                    lower_bound=1)
_TRAIN_DEADLINE = flags.DEFINE_float(
    'train_deadline_s', 0, 'Seconds after start at which running jobs get '
    'SIGTERM (checkpoint, exit 75); 0: no deadline.', lower_bound=0)
_EVAL_DEADLINE = flags.DEFINE_float(
    'eval_deadline_s', 0, 'Seconds after start by which the evaluations of '
    'stopped jobs must end; 0: no deadline.', lower_bound=0)
_SKIP_FINISHED = flags.DEFINE_bool(
    'skip_finished', False, 'Count jobs whose workdir already holds a '
    'results.json as ok without running them (continue an interrupted or '
    'extended fleet).')
_CHECK_CONFIGS = flags.DEFINE_bool(
    'check_configs', True, "Before starting anything, parse every job's "
    'launch.train config (file, overrides, checks); any that fails ends the '
    'fleet with one line per bad job (off only for a --train_module that '
    'is not launch.train).')
_CHECK_ONLY = flags.DEFINE_bool(
    'check_only', False, 'Check the configs and exit; run nothing.')
_TRAIN_MODULE = flags.DEFINE_string('train_module', 'launch.train',
                                    'Module each job runs (tests swap it).')
_EVAL_MODULE = flags.DEFINE_string('eval_module', 'launch.evaluate',
                                   'Module that evaluates stopped jobs.')

_STOP_GRACE_S = 60     # SIGTERM -> checkpoint; SIGKILL after this
_PID_FILE = 'fleet_job.pid'   # in each job's workdir, its train process
_POLL_S = 1.0


class JobsFileError(ValueError):
  """A malformed jobs file; str is one line naming the file and line."""


@dataclasses.dataclass(frozen=True)
class Job:
  name: str
  args: tuple[str, ...]
  after: Optional[str] = None


def parse_jobs(text: str, source: str) -> list[Job]:
  """Jobs of a jobs file, in file order (see module doc for the format)."""
  jobs, names = [], set()
  for lineno, line in enumerate(text.splitlines(), 1):
    words = shlex.split(line, comments=True)
    if not words:
      continue
    where = f'{source}:{lineno}'
    name, rest = words[0], words[1:]
    if not name.replace('_', '').replace('-', '').replace('.', '').isalnum():
      raise JobsFileError(f'{where}: job name {name!r}: use letters, digits, '
                          "'_', '-' and '.'")
    if name in names:
      raise JobsFileError(f'{where}: job {name!r} is defined twice')
    after = None
    if rest and rest[0].startswith('after='):
      after = rest.pop(0).split('=', 1)[1]
      if after not in names:
        raise JobsFileError(f'{where}: after={after!r}: no earlier job of '
                            'that name')
    if any(a.startswith('--workdir') for a in rest):
      raise JobsFileError(f'{where}: --workdir is set by the fleet '
                          '(ROOT/NAME)')
    names.add(name)
    jobs.append(Job(name, tuple(rest), after))
  if not jobs:
    raise JobsFileError(f'{source}: no jobs')
  return jobs


def config_errors(jobs: list[Job], source: str) -> list[str]:
  """One line per job whose launch.train config would not parse.

  Each job's --config file is loaded with its --config.* overrides (and the
  init_from the fleet will add) as launch.train loads it, then checked by
  vstar_jax.config. Nothing runs and no data is read: a fleet prepared for a
  scarce accelerator is known to start before the accelerator is spent.
  """
  found = []
  for job in jobs:
    argv = ['fleet', *(a for a in job.args if a.startswith('--config'))]
    if job.after:
      argv.append(f'--config.init_from={job.after}')
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file('config', None, '', lock_config=True,
                                    flag_values=flag_values, sys_argv=argv)
    try:
      flag_values(argv)
    except (flags.Error, AttributeError, KeyError, TypeError,
            ValueError) as e:
      found.append(f'{source}: job {job.name}: '
                   f'{runtime.flag_error(argv, e)}')
      continue
    try:
      if flag_values.config is None:
        raise errors.ConfigError('no --config')
      runtime.parse_config_flag(flag_values.config)
    except errors.ConfigError as e:
      found.append(f'{source}: job {job.name}: {e}')
  return found


class Fleet:
  """Starts, watches and stops the jobs; `run` returns each job's outcome."""

  def __init__(self, jobs: list[Job], root: str, max_running: int,
               train_module: str, eval_module: str,
               skip_finished: bool = False):
    self.jobs, self.root, self.max_running = jobs, root, max_running
    self.train_module, self.eval_module = train_module, eval_module
    self.skip_finished = skip_finished
    self.outcome: dict[str, str] = {
        j.name: 'ok (finished before)' for j in jobs
        if skip_finished and self._succeeded(j.name)}
    self.seconds: dict[str, float] = {}
    self._t0 = time.monotonic()

  def elapsed(self) -> float:
    return time.monotonic() - self._t0

  def workdir(self, name: str) -> str:
    return os.path.join(self.root, name)

  def _succeeded(self, name: str) -> bool:
    return os.path.exists(os.path.join(self.workdir(name), 'results.json'))

  def _spawn(self, name: str, module: str, args: list[str], log_name: str):
    log = open(os.path.join(self.root, 'logs', log_name), 'w')
    cmd = [sys.executable, '-m', module] + args
    log.write(shlex.join(cmd) + '\n')
    log.flush()
    # Own session: a signal to the job reaches its children too.
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

  def _start(self, job: Job) -> subprocess.Popen:
    args = [f'--workdir={self.workdir(job.name)}', *job.args]
    if job.after:
      args.append(f'--config.init_from={self.workdir(job.after)}')
    proc = self._spawn(job.name, self.train_module, args, f'{job.name}.log')
    os.makedirs(self.workdir(job.name), exist_ok=True)
    with open(self._pid_file(job.name), 'w') as f:
      f.write(str(proc.pid))
    return proc

  def _pid_file(self, name: str) -> str:
    return os.path.join(self.workdir(name), _PID_FILE)

  def _running_elsewhere(self, name: str) -> Optional[int]:
    """The pid of a live job another fleet started in this workdir."""
    try:
      with open(self._pid_file(name)) as f:
        pid = int(f.read())
      os.kill(pid, 0)               # raises if no such process
    except (OSError, ValueError):
      return None
    return pid

  def train(self, deadline: float) -> None:
    """Runs the jobs until all end or `deadline` (0: none) passes."""
    os.makedirs(os.path.join(self.root, 'logs'), exist_ok=True)
    pending = [j for j in self.jobs if j.name not in self.outcome]
    running, started = {}, {}
    while pending or running:
      for name, proc in list(running.items()):
        if proc.poll() is not None:
          del running[name]
          self.seconds[name] = time.monotonic() - started[name]
          ok = proc.returncode == 0 and self._succeeded(name)
          self.outcome[name] = (
              'ok' if ok else f'failed (exit {proc.returncode})')
          logging.info('%s: %s after %.0f s', name, self.outcome[name],
                       self.seconds[name])
      if deadline and self.elapsed() >= deadline:
        break
      for job in list(pending):
        if len(running) >= self.max_running:
          break
        if job.after and job.after not in self.outcome:
          continue                    # its dependency is still running
        pending.remove(job)
        if job.after and not self.outcome[job.after].startswith('ok'):
          self.outcome[job.name] = f'skipped ({job.after} did not succeed)'
          continue
        if self.skip_finished and self._succeeded(job.name):
          # Finished since this fleet started, by another fleet on ROOT.
          self.outcome[job.name] = 'ok (finished before)'
          logging.info('%s: %s', job.name, self.outcome[job.name])
          continue
        other = self._running_elsewhere(job.name)
        if other is not None:   # two writers would corrupt one workdir
          self.outcome[job.name] = f'skipped (running, pid {other})'
          logging.info('%s: %s', job.name, self.outcome[job.name])
          continue
        running[job.name] = self._start(job)
        started[job.name] = time.monotonic()
        logging.info('%s: started', job.name)
      time.sleep(_POLL_S)
    for job in pending:
      self.outcome[job.name] = 'not started (deadline)'
    self._stop(running, started)

  def _stop(self, running: dict, started: dict) -> None:
    for name, proc in running.items():
      logging.info('%s: deadline, SIGTERM', name)
      os.killpg(proc.pid, signal.SIGTERM)
    end = time.monotonic() + _STOP_GRACE_S
    while time.monotonic() < end and any(
        p.poll() is None for p in running.values()):
      time.sleep(_POLL_S)
    for name, proc in running.items():
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
      self.seconds[name] = time.monotonic() - started[name]
      self.outcome[name] = f'stopped (exit {proc.returncode})'

  def _best_stage(self, name: str) -> Optional[str]:
    """The last training stage with a best checkpoint, if any."""
    for stage in ('rl', 'sft'):
      best = os.path.join(self.workdir(name), 'checkpoints', stage, 'best')
      if os.path.isdir(best) and os.listdir(best):
        return stage
    return None

  def evaluate_stopped(self, deadline: float) -> None:
    """Evaluates the best checkpoint of every stopped job."""
    evals = {}
    for name, outcome in self.outcome.items():
      if not outcome.startswith('stopped'):
        continue
      stage = self._best_stage(name)
      if stage is None:
        self.outcome[name] += ', no best checkpoint to evaluate'
        continue
      evals[name] = (stage, self._spawn(
          name, self.eval_module,
          [f'--workdir={self.workdir(name)}', f'--stage={stage}'],
          f'{name}.eval.log'))
    while any(p.poll() is None for _, p in evals.values()) and not (
        deadline and self.elapsed() >= deadline):
      time.sleep(_POLL_S)
    for name, (stage, proc) in evals.items():
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
      result = 'evaluated' if proc.returncode == 0 else (
          f'evaluation failed (exit {proc.returncode})')
      self.outcome[name] += f', best {stage} checkpoint {result}'

  def write_status(self) -> str:
    path = os.path.join(self.root, 'fleet_status.json')
    status = {'elapsed_s': self.elapsed(),
              'jobs': {j.name: {'outcome': self.outcome.get(j.name, '?'),
                                'seconds': self.seconds.get(j.name),
                                'after': j.after, 'args': list(j.args)}
                       for j in self.jobs}}
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(status, f, indent=1)
    os.replace(tmp, path)
    return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    with open(_JOBS.value) as f:
      jobs = parse_jobs(f.read(), _JOBS.value)
  except (OSError, JobsFileError) as e:
    print(f'fleet: error: {e}', file=sys.stderr)
    sys.exit(1)
  if _CHECK_CONFIGS.value or _CHECK_ONLY.value:
    bad = config_errors(jobs, _JOBS.value)
    for line in bad:
      print(f'fleet: error: {line}', file=sys.stderr)
    if bad:
      sys.exit(1)
    if _CHECK_ONLY.value:
      print(f'{_JOBS.value}: {len(jobs)} jobs, every config parses')
      return
  if not _ROOT.value:
    print('fleet: error: --root is required', file=sys.stderr)
    sys.exit(1)
  if (_EVAL_DEADLINE.value and _TRAIN_DEADLINE.value and
      _EVAL_DEADLINE.value <= _TRAIN_DEADLINE.value):
    print('fleet: error: --eval_deadline_s must be after --train_deadline_s',
          file=sys.stderr)
    sys.exit(1)
  fleet = Fleet(jobs, _ROOT.value, _MAX_RUNNING.value, _TRAIN_MODULE.value,
                _EVAL_MODULE.value, _SKIP_FINISHED.value)
  fleet.train(_TRAIN_DEADLINE.value)
  fleet.evaluate_stopped(_EVAL_DEADLINE.value)
  path = fleet.write_status()
  for job in jobs:
    print(f'{job.name}: {fleet.outcome[job.name]}')
  print(f'status: {path}')
  if any(not o.startswith('ok') for o in fleet.outcome.values()):
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
