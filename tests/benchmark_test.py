"""launch/benchmark.py on the toy dataset (tiny model), and its harness.

No timing assertions: the binary must run, write well-formed JSON and
Markdown, match the host reference's items exactly, and count FLOPs as XLA
does.
"""
import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vstar_jax.bench import flops
from vstar_jax.bench import host_beam
from vstar_jax.bench import profile
from vstar_jax.bench import timing
from vstar_jax.models import policy
from vstar_jax.sid import trie as trie_lib
from vstar_jax.train import sft
from tests import toys

REPO = pathlib.Path(__file__).resolve().parents[1]
TOY = ['--data_dir=testdata/synthetic', '--dataset=toy', '--index_path=',
       '--max_history=5', '--width=64', '--num_layers=2', '--num_heads=2',
       '--num_repeats=1', '--matmul_size=128']
MACHINE_KEYS = {'cpu_model', 'num_cpus', 'num_cpus_usable', 'jax_version',
                'backend', 'devices', 'date_utc', 'load_avg_1_5_15'}


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', 'launch.benchmark', *args], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=300, check=False)


def _check_common(result, out, stdout):
  assert result['machine'].keys() >= MACHINE_KEYS
  assert result['machine']['num_cpus'] >= 1
  assert result['machine']['backend'] == 'cpu'
  assert 0. <= result['cpu_other_share'] <= 1.
  assert result['matmul_flops_per_s']['float32'] > 0
  table = out.with_suffix('.md').read_text()
  assert table.strip() in stdout
  assert '| target | value | bound | holds |' in table
  # Nothing else, e.g. no temp file left behind.
  assert sorted(p.name for p in out.parent.iterdir()) == sorted(
      [out.name, out.with_suffix('.md').name])


@pytest.mark.slow
def test_decode_suite(tmp_path):
  out = tmp_path / 'decode.json'
  # Beam 8 > the 4 root codes: dead beams must agree as well.
  proc = _run('--suite=decode', f'--out={out}', '--beam_widths=8',
              '--num_users=6', *TOY)
  assert proc.returncode == 0, proc.stderr
  result = json.loads(out.read_text())
  _check_common(result, out, proc.stdout)
  assert result['suite'] == 'decode'
  assert [r['beam_width'] for r in result['rows']] == [8]
  for row in result['rows']:
    assert set(row['methods']) == {'ours', 'ours_unconstrained',
                                   'ours_sparse_trie', 'host_dict_trie'}
    assert row['sparse_trie_same_items'] == 6
    assert row['sparse_trie_over_ours'] > 0
    for m in row['methods'].values():
      assert len(m['times_s']) == 1 and m['median_s'] > 0
      assert m['compile_s'] > 0 and m['users_per_s'] > 0
    assert row['reference_check'] == {
        'num_users': 6, 'same_items_in_order': 6, 'same_item_sets': 6}
    f = row['flops_per_user']
    assert f['analytic_minimal'] < f['analytic_as_written']
    # XLA also counts elementwise ops (LayerNorm, GELU, softmax), top-k
    # etc.: a few percent at this toy width, where they weigh most.
    assert 0.97 <= f['xla_cost_analysis'] / f['analytic_as_written'] < 1.08
    assert row['ours_over_floor'] > 0
    shares = row['ours_time_by_category']
    assert abs(sum(shares.values()) - 1.) < 1e-6
    assert shares['dense layers (qkv, out, mlp)'] > 0
  names = [t['name'] for t in result['targets']]
  assert 'beam 8: constrained / unconstrained time' in names
  assert ('beam 8: users whose sparse-trie items equal ours (in order)'
          in names)
  assert all(isinstance(t['holds'], bool) for t in result['targets'])


@pytest.mark.slow
def test_train_suite(tmp_path):
  out = tmp_path / 'sub' / 'train.json'
  proc = _run('--suite=train', f'--out={out}', '--batch_size=8',
              '--ablations=false', '--dropout_rate=0', '--profile=false',
              '--steps_per_call=1,3', '--fused_repeats=1',
              '--rl_batch_size=4', '--rollouts=beam', *TOY)
  assert proc.returncode == 0, proc.stderr
  result = json.loads(out.read_text())
  _check_common(result, out, proc.stdout)
  (row,) = result['rows']
  assert row['variant'] == 'sft_step' and row['dtype'] == 'float32'
  assert row['examples_per_s'] > 0 and row['analytic_peak_fraction'] > 0
  assert row['flops_per_step']['xla_cost_analysis'] > 0
  assert result['model_config']['num_levels'] == 3
  assert row['time_by_category'] is None
  (target,) = result['targets']
  assert target['bound'] == 0.25
  # The N column: SFT and RL at 1 and 3 steps per call.
  fused = result['steps_per_call']
  assert [(r['step'], r['steps_per_call']) for r in fused] == [
      ('sft', 1), ('sft', 3), ('rl_beam', 1), ('rl_beam', 3)]
  for r in fused:
    assert r['examples_per_s'] > 0
    np.testing.assert_allclose(r['step_s'] * r['steps_per_call'],
                               r['median_s'])
  # A whole epoch (135 windows: 16 batches of 8) at N=1 and the best N.
  assert [e['steps'] for e in result['epoch']] in ([16], [16, 16])
  assert result['epoch'][0]['steps_per_call'] == 1
  assert '| rl_beam | 4 | 3 |' in out.with_suffix('.md').read_text()


@pytest.mark.slow
@pytest.mark.parametrize('flag, message', [
    ('--index_path=/nonexistent/x.index.json', '/nonexistent/x.index.json'),
    ('--dtypes=float16', 'float16'),
])
def test_bad_input_is_one_line_error(tmp_path, flag, message):
  out = tmp_path / 'r.json'
  proc = _run('--suite=decode', f'--out={out}', *TOY, flag)
  assert proc.returncode == 1
  assert 'Traceback' not in proc.stderr
  (line,) = [l for l in proc.stderr.splitlines()
             if l.startswith('benchmark:')]
  assert message in line
  assert not out.exists() and not out.with_suffix('.md').exists()


def test_dict_trie():
  codes = np.array([[0, 1, 2], [0, 1, 0], [3, 0, 0]])
  allowed, items = host_beam.build_dict_trie(codes)
  assert {k: v.tolist() for k, v in allowed.items()} == {
      (): [0, 3], (0,): [1], (3,): [0], (0, 1): [0, 2], (3, 0): [0]}
  assert items == {(0, 1, 2): 0, (0, 1, 0): 1, (3, 0, 0): 2}


def test_categorize_op_names():
  net = 'jit(f)/jvp(PolicyValueNet)/PolicyValueNet.decode/'
  assert profile.categorize(
      net + 'block_0.decode/block_0._mlp/mlp_in/dot_general') == (
          'dense layers (qkv, out, mlp)')
  assert profile.categorize(
      'jit(f)/transpose(' + net[7:] + 'block_1.decode/dropout/mul') == (
          'dropout (bwd)')
  assert profile.categorize(net + 'bkqd,ldv->bkqlv/dot_general') == (
      'output head')
  assert profile.categorize('jit(f)/top_k') == profile.OTHER
  assert profile.categorize('') == profile.OTHER


def test_time_calls_warms_up_then_times_each_call():
  seen = []
  t = timing.time_calls(lambda i: seen.append(i) or jnp.zeros(()),
                        num_calls=3, num_warmup=2, compile_s=1.5)
  assert seen == [-2, -1, 0, 1, 2]
  assert len(t.times_s) == 3 and t.compile_s == 1.5
  assert t.min_s <= t.median_s
  with pytest.raises(ValueError, match='num_calls'):
    timing.time_calls(lambda i: None, num_calls=0)


def test_sft_forward_flops_match_xla():
  cfg = toys.policy_config(vocab_size=16, max_history=6, width=64,
                           num_layers=2, value_width=128)
  codes = np.array([[a, b, c] for a in range(4) for b in range(3)
                    for c in range(2)], np.int32)
  trie = trie_lib.build_trie(codes, vocab_size=16)
  batch = {'history': jnp.zeros((8, 6), jnp.int32),
           'history_mask': jnp.ones((8, 6), bool),
           'target': jnp.arange(8, dtype=jnp.int32),
           'example_mask': jnp.ones((8,), bool)}
  params = jax.eval_shape(functools.partial(policy.init_params, cfg),
                          jax.random.key(0))
  loss = jax.jit(lambda p, b, t: sft.sft_loss(
      p, b, t, jax.random.key(0), net=policy.PolicyValueNet(cfg),
      constrained=True, train=False)[0])
  xla = timing.cost_flops(loss.lower(params, batch, trie).compile()) / 8
  analytic = flops.sft_forward_flops(cfg, num_history=6, minimal=False)
  assert 0.97 <= xla / analytic < 1.1


def test_ved_report_and_plot():
  from vstar_jax.bench import report  # pylint: disable=g-import-not-at-top
  rows = [dict(method=m, budget=b, prompts=64, target_in_group=0.1 * b / 33,
               reward_std=0.1, zero_adv_frac=0.8, distinct_l1=3.0,
               distinct_l2=5.0, unique_items=16.0, long_tail_share=0.2,
               rollout_cost=b, ms_per_prompt=1.0)
          for m in ('ved', 'beam', 'sample') for b in (33, 49)]
  result = {'rows': rows, 'machine': {'date_utc': '2026-11-25'},
            'command': 'python -m launch.benchmark --suite=ved',
            'workdir': 'runs/x', 'stage': 'sft', 'dataset': 'toy',
            'num_levels': 3, 'prompts': 'training windows', 'group_size': 16,
            'init_beam': 4, 'temperature': 1.0, 'reward': 'ranking',
            'cpu_other_share': 0.0}
  table = report.ved_markdown(result)
  assert table.count('\n| 33 |') == 3 and '| 49 | ved | 0.148 |' in table
  assert report.ved_plot(result)[:8] == b'\x89PNG\r\n\x1a\n'
