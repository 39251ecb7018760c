r"""Exports a trained run's item-id embedding table as a .npy file.

  python -m launch.export_item_embeddings --workdir=runs/sasrec_sci \
      --out=results/cf/scientific_sasrec.npy

Writes float32 [N, D], row n for the dataset's n-th catalogue item (the
item id order of vstar_jax.data.dataset, the order `launch.build_sids
--embeddings` reads), from the stage's best-on-validation parameters: a
SASRec run's input item embeddings, or a SID run's hybrid item-id table
(config.model.item_id_embedding). These are collaborative (CF) embeddings:
residual k-means on them gives SIDs with a collaborative signal, alone or
beside the text embeddings (`--embeddings=text.npy,cf.npy`).

Bad input (not a run directory, no such stage, a run without an item table,
an --out that is not a .npy path): one line on stderr, exit code 1, nothing
written.
"""
from absl import app
from absl import flags
import jax

from launch import runtime
from launch.configs import common
from vstar_jax import errors
from vstar_jax.data import files
from vstar_jax.train import cf_model
from vstar_jax.train import evaluation

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.',
                               required=True)
_OUT = flags.DEFINE_string('out', None, 'Output .npy path.', required=True)
_STAGE = flags.DEFINE_string('stage', 'sft', 'Training stage to read.')


def _export() -> str:
  if not _OUT.value.endswith('.npy'):
    raise errors.ConfigError(f'--out={_OUT.value}: expected a .npy path')
  config = evaluation.load_run_config(_WORKDIR.value, common.base_config())
  table = cf_model.trained_item_table(config, _WORKDIR.value, _STAGE.value)
  files.write_files({_OUT.value: files.encode_npy(table)})
  return (f'{table.shape[0]} x {table.shape[1]} item embeddings of '
          f'{_WORKDIR.value} ({config.model.kind}, stage {_STAGE.value}) -> '
          f'{_OUT.value}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  jax.config.update('jax_threefry_partitionable', True)
  print(runtime.run_main('export_item_embeddings', _export))


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
