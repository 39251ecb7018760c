"""SASRec defaults shared by the sasrec_* configs (RecBole's SASRec sizes).

RecBole 1.2.1 defaults: hidden 64, 2 layers, 2 heads, inner 256, dropout 0.5
on hidden states and attention weights, Adam lr 1e-3 without weight decay,
CE loss over all items, early stopping after 10 validations without a better
NDCG@10. Here: AdamW with weight decay 0 (= Adam), a short warmup and a cosine
decay over an epoch budget (with a 200-epoch cosine, Scientific was
still creeping up on validation after 43 epochs, 30 s each on the 2-core
sandbox), validation about once per epoch on all users.
"""
from launch.configs import common

# name -> (data dir, file stem, training windows per epoch at batch 256).
DATASETS = {
    'scientific': ('../shared/data/amazon_scientific', 'Scientific', 131),
    'beauty': ('../shared/data/amazon_beauty', 'Beauty', 513),
    'movielens': ('testdata/movielens', 'ml-latest-small', 343),
}


def sasrec_config(dataset: str, *, num_epochs: int):
  """The run config of a DATASETS entry; eval and checkpoint every epoch."""
  data_dir, name, steps_per_epoch = DATASETS[dataset]
  config = common.base_config()
  config.log_every = 100
  config.data.dir = data_dir
  config.data.name = name
  config.data.index = None                 # ID-based: no SIDs needed
  config.data.max_history = 20

  config.model.kind = 'sasrec'
  config.model.width = 64
  config.model.num_layers = 2
  config.model.num_heads = 2
  config.model.mlp_ratio = 4               # inner width 256
  config.model.dropout_rate = 0.5
  config.model.attn_dropout_rate = 0.5

  config.sft.batch_size = 256
  config.sft.num_epochs = num_epochs        # the cosine decays to 0 over it
  config.sft.learning_rate = 1e-3
  config.sft.warmup_steps = 100
  config.sft.weight_decay = 0.0
  config.sft.grad_clip = 5.0
  config.sft.eval_every = steps_per_epoch
  config.sft.early_stop_patience = 10

  config.eval.beam_width = 50              # ranked list length (top-K)
  config.eval.valid_beam = 20
  config.eval.valid_subset = 0             # all validation users
  config.eval.batch_size = 1024
  config.checkpoint.every_steps = steps_per_epoch
  return config
