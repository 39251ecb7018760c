"""Markdown tables of benchmark results (the dicts `suites` returns, plus
the binary's 'machine', 'command' and 'setup' entries)."""

_METHOD_NAMES = {
    'ours': 'ours: jitted, device trie',
    'ours_unconstrained': 'ours, unconstrained',
    'ours_sparse_trie': 'ours, sparse (CSR) last trie level',
    'host_dict_trie': 'reference: host dict trie',
}


def _peaks(result: dict) -> str:
  after = result['matmul_flops_per_s_after']
  return ', '.join(f'{k} {v / 1e9:.0f} GFLOP/s ({after[k] / 1e9:.0f} at the '
                   'end)' for k, v in result['matmul_flops_per_s'].items())


def _header(result: dict) -> list[str]:
  m = result['machine']
  share = result['cpu_other_share']
  return [
      f'Benchmark suite `{result["suite"]}`, {m["date_utc"]}',
      '',
      f'Command: `{result["command"]}`',
      '',
      f'Machine: {m["cpu_model"]}, {m["num_cpus_usable"]} usable cores, '
      f'jax {m["jax_version"]} ({m["backend"]}); load average (1, 5, 15 '
      f'min) {m["load_avg_1_5_15"]} before, {result["load_avg_after"]} '
      f'after; other processes used {share:.0%} of the cores during the '
      'run.',
      '',
      f'Setup: {result["setup"]}',
      '',
      f'Matmul peak ({result["matmul_size"]}^3, best of several): '
      f'{_peaks(result)}; fractions and floors use the first.',
      '',
  ]


def _targets(result: dict) -> list[str]:
  lines = ['', '| target | value | bound | holds |',
           '| --- | --- | --- | --- |']
  for t in result['targets']:
    value = t['value']
    value = f'{value:.3g}' if isinstance(value, float) else str(value)
    lines.append(f'| {t["name"]} | {value} | {t["op"]} {t["bound"]} | '
                 f'{"yes" if t["holds"] else "**no**"} |')
  return lines


def _breakdown(columns: dict[str, dict[str, float] | None]) -> list[str]:
  """Table of op-time shares: one row per category, one column per run."""
  columns = {k: v for k, v in columns.items() if v}
  if not columns:
    return []
  categories = []
  for shares in columns.values():
    categories += [c for c in shares if c not in categories]
  lines = ['', 'Share of summed op time (jax.profiler trace, grouped by '
           'op name; `vstar_jax/bench/profile.py`):', '',
           '| category | ' + ' | '.join(columns) + ' |',
           '| --- |' + ' --- |' * len(columns)]
  for c in categories:
    lines.append(f'| {c} | ' + ' | '.join(
        f'{s.get(c, 0.):.1%}' for s in columns.values()) + ' |')
  return lines


def decode_markdown(result: dict) -> str:
  lines = _header(result) + [
      '| beam | method | compile / first call (s) | batch median (s) | '
      'users/s | time vs ours |',
      '| --- | --- | --- | --- | --- | --- |']
  for row in result['rows']:
    ours = row['methods']['ours']['median_s']
    for name, m in row['methods'].items():
      lines.append(
          f'| {row["beam_width"]} | {_METHOD_NAMES[name]} | '
          f'{m["compile_s"]:.2f} | {m["median_s"]:.4f} | '
          f'{m["users_per_s"]:,.0f} | {m["median_s"] / ours:.2f}x |')
  lines += [
      '',
      'Floor: minimal FLOPs / measured float32 matmul peak.',
      '',
      '| beam | MFLOP/user minimal | as written | XLA cost_analysis | '
      'floor ms/user | ours ms/user | ours / floor | reference host ms/user '
      '(device / mask / select) |',
      '| --- | --- | --- | --- | --- | --- | --- | --- |']
  for row in result['rows']:
    f = row['flops_per_user']
    split = row['reference_seconds_per_user']
    lines.append(
        f'| {row["beam_width"]} | {f["analytic_minimal"] / 1e6:.1f} | '
        f'{f["analytic_as_written"] / 1e6:.1f} | '
        f'{f["xla_cost_analysis"] / 1e6:.1f} | '
        f'{row["floor_s_per_user"] * 1e3:.3f} | '
        f'{row["ours_s_per_user"] * 1e3:.3f} | '
        f'{row["ours_over_floor"]:.1f}x | '
        f'{split["device"] * 1e3:.3f} / {split["mask"] * 1e3:.3f} / '
        f'{split["select"] * 1e3:.3f} |')
  lines += _breakdown({f'ours, beam {r["beam_width"]}':
                       r['ours_time_by_category'] for r in result['rows']})
  return '\n'.join(lines + _targets(result)) + '\n'


def train_markdown(result: dict) -> str:
  lines = _header(result) + [
      '| variant | dtype | dropout | compile (s) | step median (s) | '
      'examples/s | GFLOP/call analytic | XLA | '
      'analytic % of peak | XLA % of peak |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in result['rows']:
    f = r['flops_per_step']
    lines.append(
        f'| {r["variant"]} | {r["dtype"]} | {r["dropout_rate"]} | '
        f'{r["compile_s"]:.1f} | {r["median_s"]:.4f} | '
        f'{r["examples_per_s"]:,.0f} | {f["analytic_as_written"] / 1e9:.2f} '
        f'| {f["xla_cost_analysis"] / 1e9:.2f} | '
        f'{r["analytic_peak_fraction"]:.1%} | {r["xla_peak_fraction"]:.1%} |')
  lines += ['', 'Analytic FLOPs: 3x forward (1x for forward_only) of the '
            'network as written.']
  lines += _breakdown({f'{r["variant"]} {r["dtype"]}': r['time_by_category']
                       for r in result['rows']})
  lines += _steps_per_call_table(result)
  return '\n'.join(lines + _targets(result)) + '\n'


def _steps_per_call_table(result: dict) -> list[str]:
  """N steps per jitted call (train/fused.py), and whole-epoch timings."""
  rows = result.get('steps_per_call')
  if not rows:
    return []
  lines = ['', 'Steps per jitted call N (a lax.scan over batches gathered on '
           'the device; float32; median of the timed calls):', '',
           '| step | batch | N | compile (s) | call median (s) | per step (ms) '
           '| examples/s | vs first N |',
           '| --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in rows:
    lines.append(
        f'| {r["step"]} | {r["batch_size"]} | {r["steps_per_call"]} | '
        f'{r["compile_s"]:.1f} | {r["median_s"]:.4f} | '
        f'{r["step_s"] * 1e3:.2f} | {r["examples_per_s"]:,.0f} | '
        f'{r["speedup_vs_first"]:.2f}x |')
  if result.get('epoch'):
    lines += ['', 'One whole SFT epoch end to end (host index hand-over '
              'included, compilation excluded):', '',
              '| N | steps | examples | seconds | examples/s |',
              '| --- | --- | --- | --- | --- |']
    for e in result['epoch']:
      lines.append(f'| {e["steps_per_call"]} | {e["steps"]} | '
                   f'{e["examples"]:,} | {e["seconds"]:.1f} | '
                   f'{e["examples_per_s"]:,.0f} |')
  return lines


VED_COLUMNS = (
    ('target_in_group', 'target in group'), ('reward_std', 'reward std'),
    ('zero_adv_frac', 'all-zero adv.'), ('distinct_l1', 'distinct L1'),
    ('distinct_l2', 'distinct L2'), ('unique_items', 'unique items'),
    ('long_tail_share', 'long-tail share'), ('rollout_cost', 'tokens used'),
    ('found_outside_beam', 'found outside beam-G'),
    ('beam_found_lost', 'beam-G found, lost'),
    ('value_auc', 'value AUC'), ('decoder_calls', 'decoder calls'),
    ('ms_per_prompt', 'ms / prompt'))
VED_TREE_COLUMNS = (
    ('complete_leaves', 'leaf pool'),
    ('target_in_tree', 'target in pool'),
    ('target_top_g_by_value', 'in top G by V'),
    ('target_top_g_by_logp', 'in top G by log-prob'),
    ('target_top_g_by_mixed', 'in top G by log-prob + wV'),
    ('value_auc', 'AUC V'), ('logp_auc', 'AUC log-prob'),
    ('mixed_auc', 'AUC log-prob + wV'), ('iterations', 'explore iterations'))


def ved_markdown(result: dict) -> str:
  """Rollout comparison table (rows: budget x method)."""
  lines = [
      f"Benchmark suite `ved`, {result['machine']['date_utc']}", '',
      f"Command: `{result['command']}`", '',
      f"Run: `{result['workdir']}` ({result['stage']}), {result['dataset']}, "
      f"L={result['num_levels']}; {result['rows'][0]['prompts']} "
      f"{result['prompts']}; G={result['group_size']}, VED variants "
      f"{result.get('ved_variants')} over presets "
      f"{result.get('ved_presets')}, lambda {result.get('ved_lambda')}, beta "
      f"{result.get('ved_beta')}, temperature {result['temperature']}, reward "
      f"{result['reward']}; other processes used "
      f"{100 * result['cpu_other_share']:.0f}% of the cores.", '',
      '| budget | method | ' + ' | '.join(c for _, c in VED_COLUMNS) + ' |',
      '|' + '---|' * (2 + len(VED_COLUMNS))]
  for row in result['rows']:
    cells = [f'{row[k]:.3f}' if k in row else '' for k, _ in VED_COLUMNS]
    lines.append(f"| {row['budget']} | {row['method']} | " +
                 ' | '.join(cells) + ' |')
  tree_rows = [r for r in result['rows'] if 'target_in_tree' in r]
  if tree_rows:
    lines += ['', 'VED trees: where the target is lost (leaf pool = the '
              'evaluated depth-L nodes, or without leaf evaluation every '
              'valid child of an evaluated depth-(L-1) node, valued at its '
              'parent; AUC over prompts whose pool holds the target, 0.5 = '
              'chance).', '',
              '| budget | method | ' +
              ' | '.join(c for _, c in VED_TREE_COLUMNS) +
              ' |', '|' + '---|' * (2 + len(VED_TREE_COLUMNS))]
    for row in tree_rows:
      lines.append(f"| {row['budget']} | {row['method']} | " + ' | '.join(
          f'{row[k]:.3f}' for k, _ in VED_TREE_COLUMNS) + ' |')
  return '\n'.join(lines) + '\n'


def ved_plot(result: dict) -> bytes:
  """PNG: four panels against the budget, one line per method."""
  import io  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = (('target_in_group', 'groups containing the target'),
            ('zero_adv_frac', 'groups with all-zero advantages'),
            ('reward_std', 'within-group reward std'),
            ('ms_per_prompt', 'wall ms per prompt'))
  fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.6))
  methods = sorted({r['method'] for r in result['rows']})
  for ax, (key, title) in zip(axes, panels):
    for method in methods:
      rows = sorted((r for r in result['rows'] if r['method'] == method),
                    key=lambda r: r['budget'])
      ax.plot([r['budget'] for r in rows], [r[key] for r in rows], 'o-',
              label=method)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel('decoder-token budget per prompt')
  axes[0].legend()
  fig.suptitle(f"{result['dataset']}: rollouts at equal budgets "
               f"(G={result['group_size']})", fontsize=11)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=110)
  plt.close(fig)
  return buf.getvalue()
