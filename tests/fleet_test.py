"""launch.fleet: the jobs-file format, the config check and the scheduler
(with a fake job)."""
import glob
import json
import os
import subprocess
import sys
import time

import pytest

from launch import fleet


def test_parse_jobs():
  jobs = fleet.parse_jobs(
      '# a comment\n\nsft --config=launch/configs/smoke.py\n'
      "rl after=sft --config=x.py --config.a='b c'  # why\n", 'f.txt')
  assert jobs == [
      fleet.Job('sft', ('--config=launch/configs/smoke.py',)),
      fleet.Job('rl', ('--config=x.py', '--config.a=b c'), after='sft')]


@pytest.mark.parametrize('text, message', [
    ('', 'f.txt: no jobs'),
    ('a --x\na --y\n', "f.txt:2: job 'a' is defined twice"),
    ('b after=a --x\n', "f.txt:1: after='a': no earlier job"),
    ('a --workdir=/tmp/x\n', 'f.txt:1: --workdir is set by the fleet'),
    ('a/b --x\n', "f.txt:1: job name 'a/b'"),
])
def test_parse_jobs_errors(text, message):
  with pytest.raises(fleet.JobsFileError, match=message):
    fleet.parse_jobs(text, 'f.txt')


def test_config_errors_one_line_per_bad_job(repo_root, monkeypatch):
  jobs = fleet.parse_jobs(
      'ok --config=launch/configs/smoke.py --config.seed=3\n'
      'field --config=launch/configs/smoke.py --config.sft.batchsize=3\n'
      'value --config=launch/configs/smoke.py --config.rollout.kind=vedd\n'
      'file --config=no_such_config.py\n'
      'arg --config=launch/configs/smoke.py:extra\n'
      'none --mode=ok\n'
      'rl after=ok --config=launch/configs/ablation.py:scientific,vstar\n'
      'rl_alone --config=launch/configs/ablation.py:scientific,vstar\n',
      'f.txt')
  monkeypatch.chdir(repo_root)
  assert fleet.config_errors(jobs, 'f.txt') == [
      'f.txt: job field: config.sft.batchsize: unknown config field; did '
      'you mean config.sft.batch_size?',
      "f.txt: job value: config.rollout.kind='vedd': expected one of 'ved', "
      "'beam', 'sample'",
      "f.txt: job file: --config: [Errno 2] No such file or directory: "
      "'no_such_config.py'",
      'f.txt: job arg: flag --config=launch/configs/smoke.py:extra: '
      'TypeError: get_config() takes 0 positional arguments but 1 was given',
      'f.txt: job none: no --config',
      # `after=` gives the RL job its init_from; without it the job is bad.
      "f.txt: job rl_alone: config.init_from='': config.stages='rl' starts "
      'from the SFT checkpoint of a run directory; set config.init_from to '
      'one',
  ]


@pytest.mark.parametrize('path', sorted(
    glob.glob(os.path.join(os.path.dirname(__file__), '..', 'launch',
                           'fleets', '*.txt'))),
    ids=os.path.basename)
def test_every_committed_fleet_parses(path, repo_root, monkeypatch):
  """A fleet kept for a rare accelerator must not die on a renamed field."""
  with open(path) as f:
    jobs = fleet.parse_jobs(f.read(), path)
  monkeypatch.chdir(repo_root)
  assert fleet.config_errors(jobs, path) == []


def test_check_only_runs_nothing_and_a_bad_fleet_starts_nothing(tmp_path,
                                                                repo_root):
  jobs = tmp_path / 'jobs.txt'
  jobs.write_text('good --config=launch/configs/smoke.py\n'
                  'bad --config=launch/configs/smoke.py --config.sft.lr=1\n')
  root = tmp_path / 'root'
  for extra in (['--check_only'], [f'--root={root}']):
    out = subprocess.run(
        [sys.executable, '-m', 'launch.fleet', f'--jobs={jobs}', *extra],
        cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f'fleet: error: {jobs}: job bad: config.sft.lr: unknown config field')
    assert not root.exists()
  jobs.write_text('good --config=launch/configs/smoke.py\n')
  out = subprocess.run(
      [sys.executable, '-m', 'launch.fleet', f'--jobs={jobs}', '--check_only'],
      cwd=repo_root, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == f'{jobs}: 1 jobs, every config parses'


@pytest.mark.slow
def test_fleet_dependencies_failures_and_deadline(tmp_path, repo_root):
  jobs = tmp_path / 'jobs.txt'
  jobs.write_text('a --mode=ok\n'
                  'b after=a --mode=ok\n'
                  'c --mode=fail\n'
                  'd after=c --mode=ok\n'
                  'e --mode=hang\n')
  root = tmp_path / 'root'
  out = subprocess.run(
      [sys.executable, '-m', 'launch.fleet', f'--jobs={jobs}', f'--root={root}',
       '--max_running=2', '--train_module=tests.fleet_fake_job',
       '--nocheck_configs',
       '--eval_module=tests.fleet_fake_job', '--train_deadline_s=8',
       '--eval_deadline_s=40'],
      cwd=repo_root, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr
  status = json.loads((root / 'fleet_status.json').read_text())['jobs']
  outcome = {name: s['outcome'] for name, s in status.items()}
  assert outcome['a'] == 'ok' and outcome['b'] == 'ok'
  assert outcome['c'] == 'failed (exit 1)'
  assert outcome['d'] == 'skipped (c did not succeed)'
  assert outcome['e'] == 'stopped (exit 75), best sft checkpoint evaluated'
  # b ran from a's workdir; the stopped job's best checkpoint was evaluated.
  b_args = json.loads((root / 'b' / 'calls.jsonl').read_text().splitlines()[0])
  assert f'--config.init_from={root / "a"}' in b_args
  assert (root / 'e' / 'eval_sft.json').exists()
  assert not (root / 'd').exists()


def test_skip_finished_keeps_done_jobs_and_runs_their_dependents(tmp_path,
                                                                 repo_root):
  jobs = tmp_path / 'jobs.txt'
  jobs.write_text('a --mode=fail\nb after=a --mode=ok\nc --mode=ok\n'
                  'd --mode=ok\n')
  root = tmp_path / 'root'
  (root / 'a').mkdir(parents=True)
  (root / 'a' / 'results.json').write_text('{}')     # a finished earlier
  # c is being run by another fleet (this test process stands in for its
  # train process); d's pid file names a process that has ended.
  (root / 'c').mkdir()
  (root / 'c' / 'fleet_job.pid').write_text(str(os.getpid()))
  ended = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                         capture_output=True, text=True, check=True)
  (root / 'd').mkdir()
  (root / 'd' / 'fleet_job.pid').write_text(ended.stdout.strip())
  out = subprocess.run(
      [sys.executable, '-m', 'launch.fleet', f'--jobs={jobs}', f'--root={root}',
       '--skip_finished', '--train_module=tests.fleet_fake_job',
       '--nocheck_configs'],
      cwd=repo_root, capture_output=True, text=True, timeout=60)
  assert out.returncode == 2, out.stderr
  status = json.loads((root / 'fleet_status.json').read_text())['jobs']
  assert status['a']['outcome'] == 'ok (finished before)'
  assert status['b']['outcome'] == 'ok'
  assert status['c']['outcome'] == f'skipped (running, pid {os.getpid()})'
  assert not (root / 'c' / 'calls.jsonl').exists()
  assert status['d']['outcome'] == 'ok'
  assert not (root / 'a' / 'calls.jsonl').exists()    # a was not run again
  b_args = json.loads((root / 'b' / 'calls.jsonl').read_text().splitlines()[0])
  assert f'--config.init_from={root / "a"}' in b_args


@pytest.mark.slow
def test_fleets_sharing_a_root_run_each_job_once(tmp_path, repo_root):
  # Fleet 1 runs a, then b; fleet 2 starts while a runs, skips it and runs
  # b. When fleet 1 reaches b, fleet 2 has finished it: b must not run again.
  jobs = tmp_path / 'jobs.txt'
  jobs.write_text('a --mode=ok --sleep=6\nb --mode=ok\n')
  root = tmp_path / 'root'
  cmd = [sys.executable, '-m', 'launch.fleet', f'--jobs={jobs}',
         f'--root={root}', '--max_running=1', '--skip_finished',
         '--train_module=tests.fleet_fake_job', '--nocheck_configs']
  first = subprocess.Popen(cmd, cwd=repo_root, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  pid_file = root / 'a' / 'fleet_job.pid'
  for _ in range(400):          # until fleet 1 has started a
    if pid_file.exists():
      break
    time.sleep(0.05)
  second = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True,
                          timeout=60)
  first_out, first_err = first.communicate(timeout=60)
  assert 'a: skipped (running' in second.stdout, second.stderr
  assert 'b: ok (finished before)' in first_out, first_err
  for name in 'ab':
    calls = (root / name / 'calls.jsonl').read_text().splitlines()
    assert len(calls) == 1, (name, first_err, second.stderr)
