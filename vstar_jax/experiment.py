"""Everything a run needs besides parameters: data, split, SIDs and trie.

Shared by the training, evaluation and recommendation binaries so that they
see the same catalogue and split for a given config. ID-based model families
(ID_ONLY_KINDS) need no SIDs: their experiment has no trie, and SIDs, when
the dataset has an index, only feed the prefix-diversity metrics.
"""
import dataclasses
import os
from typing import Optional

from absl import logging
import jax
import numpy as np

from vstar_jax import config as config_lib
from vstar_jax import errors
from vstar_jax.data import dataset as dataset_lib
from vstar_jax.data import files
from vstar_jax.data import sid_index
from vstar_jax.data import splits
from vstar_jax.eval import ranking
from vstar_jax.sid import collisions as sid_collisions
from vstar_jax.sid import stats as sid_stats
from vstar_jax.sid import trie as trie_lib


# config.model.kind values that rank item ids directly (no SID decoding).
ID_ONLY_KINDS = ('sasrec',)


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
  """Host-side view of the data of one run."""
  dataset: dataset_lib.Dataset
  split: splits.Split
  codes: Optional[np.ndarray]   # [N, L] int32 SIDs; None: no index (ID model)
  trie: Optional[trie_lib.PrefixTrie]  # on device; None for ID models
  long_tail: np.ndarray         # [N] bool, by training popularity
  train_counts: np.ndarray      # [N] int64 training-target counts
  sid_source: Optional[str]     # index path the SIDs came from

  @property
  def num_levels(self) -> int:
    """SID length L; 0 without SIDs."""
    return 0 if self.codes is None else self.codes.shape[1]

  @property
  def vocab_size(self) -> int:
    return self.trie.vocab_size


def _resolve(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path))


_SPLITS = {'leave_one_out': splits.leave_one_out_split,
           'chronological': splits.chronological_split}


def _sid_codes(config: config_lib.RunConfig, ds,
               workdir: Optional[str]) -> tuple[np.ndarray, str]:
  """SIDs from the dataset's index, or built by the SID tokenizer."""
  policy_name = config.data.sid_collisions
  if ds.sids is not None:
    colliding = sid_stats.collision_summary(ds.sids)['colliding_items']
    if not colliding:
      return ds.sids, ds.paths['index']
    if policy_name == 'extra_level':
      # TIGER's remedy: one more level, the item's rank in its collision group.
      codes, _ = sid_collisions.resolve_by_extra_level(ds.sids)
      logging.info('%s: %d colliding items; appended a disambiguation level',
                   ds.paths['index'], colliding)
      return codes, ds.paths['index']
    raise errors.ConfigError(
        f'{ds.paths["index"]}: {colliding} items share an SID; collided '
        'items would count as hits for each other. Use a collision-free '
        'index (e.g. a *_zcr variant), config.data.sid_collisions='
        'extra_level, or build SIDs (config.data.index=None)')
  if config.init_from:
    # A checkpoint means something only with the SIDs it was trained on.
    path = built_index_path(_resolve(config.init_from), ds.name)
    if not os.path.exists(path):
      raise errors.ConfigError(
          f'{path}: not found; config.init_from={config.init_from!r} did not '
          'build its SIDs, so set config.data.index to the index it used')
    return _codes_in_item_order(sid_index.read_sid_index(path), ds, path), path
  if workdir is None:
    raise errors.ConfigError(
        f'dataset {ds.name!r} has no SID index: set config.data.index, or '
        'build SIDs inside a run (launch.train)')
  return _built_sids(config, ds, workdir)


def built_index_path(workdir: str, dataset_name: str) -> str:
  """Where a run keeps the SIDs it built (config.data.index empty)."""
  return os.path.join(workdir, 'sids', f'{dataset_name}.index.json.gz')


def cf_embeddings_path(workdir: str) -> str:
  """[N, D] float32 .npy item table of the run's CF model (sid.inputs cf)."""
  return os.path.join(workdir, 'sids', 'cf_item_embeddings.npy')


def _sid_embeddings(config: config_lib.RunConfig, ds,
                    workdir: str) -> np.ndarray:
  """[N, D] float32 rows residual k-means reads (config.sid.inputs)."""
  from vstar_jax.sid import build  # pylint: disable=g-import-not-at-top
  parts = {}
  for source in config.sid.inputs.split('+'):
    if source == 'text':
      parts['text'] = build.dataset_embeddings(
          ds, cache_dir=_resolve(config.embedding_cache_dir))
    else:
      path = cf_embeddings_path(workdir)
      if not os.path.exists(path):
        raise errors.ConfigError(
            f'{path}: not found; config.sid.inputs={config.sid.inputs!r} '
            'reads the item table of config.sid.cf_model, which launch.train '
            'trains first')
      parts[path] = build.load_embeddings(path, ds.num_items)
  if len(parts) == 1:
    return next(iter(parts.values()))
  return build.concat_normalized(parts)


def _built_sids(config: config_lib.RunConfig, ds,
                workdir: str) -> tuple[np.ndarray, str]:
  """Builds SIDs with our tokenizer once per run (WORKDIR/sids/)."""
  from vstar_jax.sid import build  # pylint: disable=g-import-not-at-top
  path = built_index_path(workdir, ds.name)
  if not os.path.exists(path):
    c = config.sid
    build_cfg = build.SidBuildConfig(
        num_levels=c.num_levels, codebook_size=c.codebook_size,
        num_iters=c.num_iters, balanced=c.balanced, collisions=c.collisions)
    codes, stats = build.build_sids(jax.random.key(c.seed),
                                    _sid_embeddings(config, ds, workdir),
                                    build_cfg)
    stats['inputs'] = c.inputs
    files.write_files({
        path: files.encode_json(sid_index.format_sid_index(codes, ds.item_ids),
                                gz=True),
        os.path.join(workdir, 'sids', 'sid_stats.json'):
            files.encode_json(stats, indent=1)})
    logging.info('Built SIDs for %s from %s: %s', ds.name, c.inputs, path)
  return _codes_in_item_order(sid_index.read_sid_index(path), ds, path), path


def _codes_in_item_order(by_item, ds, path) -> np.ndarray:
  missing = [i for i in ds.item_ids if i not in by_item]
  if missing:
    raise errors.DataError(f'{path}: item {missing[0]!r} has no SID')
  return np.asarray([by_item[i] for i in ds.item_ids], np.int32)


def load_experiment(config: config_lib.RunConfig,
                    workdir: Optional[str] = None) -> Experiment:
  """Reads and validates the data of `config`; raises one-line errors."""
  data_cfg = config.data
  index = _resolve(data_cfg.index) if data_cfg.index else None
  ds = dataset_lib.load_dataset(_resolve(data_cfg.dir), data_cfg.name,
                                index_path=index)
  split = _SPLITS[data_cfg.protocol](ds, max_history=data_cfg.max_history)
  if config.model.kind in ID_ONLY_KINDS:
    # Hits are by item index, so SID collisions cannot inflate them.
    codes, source, trie = ds.sids, ds.paths.get('index'), None
  else:
    codes, source = _sid_codes(config, ds, workdir)
    trie = trie_lib.build_trie(codes)
  counts = np.bincount(split.train.target, minlength=ds.num_items)
  long_tail = ranking.long_tail_items(counts, config.eval.head_fraction)
  logging.info(
      'Data %s: %d users, %d items, SIDs from %s (L=%d); %s split '
      'train/valid/test = %d/%d/%d', ds.name, ds.num_users, ds.num_items,
      source, 0 if codes is None else codes.shape[1], data_cfg.protocol,
      len(split.train), len(split.valid), len(split.test))
  return Experiment(dataset=ds, split=split, codes=codes, trie=trie,
                    long_tail=long_tail, train_counts=counts,
                    sid_source=source)


def fixed_subset(examples: splits.Examples, size: int,
                 seed: int) -> splits.Examples:
  """A fixed random subset (all rows if size <= 0 or >= M)."""
  if size <= 0 or size >= len(examples):
    return examples
  rows = np.sort(np.random.default_rng(seed).permutation(len(examples))[:size])
  return splits.Examples(
      history=examples.history[rows], history_mask=examples.history_mask[rows],
      target=examples.target[rows], user=examples.user[rows])
