"""Defaults shared by every config; named configs override what differs."""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """All fields a run reads, with CPU-sized defaults."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.stages = ('sft',)
  config.log_every = 50
  # > 0: stop after this many optimizer steps in this invocation, with a
  # checkpoint (job time limits, resume tests); rerun to continue.
  config.stop_after_steps = 0

  config.data = ml_collections.ConfigDict()
  config.data.dir = 'testdata/movielens'
  config.data.name = 'ml-latest-small'
  config.data.index = ml_collections.FieldReference(None, field_type=str)
  config.data.protocol = 'leave_one_out'   # or 'chronological'
  config.data.max_history = 20

  config.model = ml_collections.ConfigDict()
  config.model.kind = 'sid'                # generative SID policy; 'sasrec'
  config.model.width = 128
  config.model.num_layers = 2
  config.model.num_heads = 4
  config.model.mlp_ratio = 4
  config.model.dropout_rate = 0.1
  config.model.attn_dropout_rate = 0.1     # on attention weights (sasrec)
  config.model.value_width = 128
  config.model.value_grad_to_trunk = True
  config.model.dtype = 'float32'           # compute dtype; or 'bfloat16'

  config.sft = ml_collections.ConfigDict()
  config.sft.batch_size = 256
  config.sft.num_epochs = 20
  config.sft.num_steps = 0                 # > 0 overrides num_epochs
  config.sft.learning_rate = 1e-3
  config.sft.warmup_steps = 200
  config.sft.weight_decay = 0.01
  config.sft.grad_clip = 1.0
  config.sft.constrained_softmax = True
  config.sft.eval_every = 500
  config.sft.early_stop_patience = 4       # evaluations without improvement

  config.eval = ml_collections.ConfigDict()
  config.eval.beam_width = 50              # reporting width
  config.eval.valid_beam = 20              # during training (subset)
  config.eval.valid_subset = 2000          # users; <= 0 means all
  config.eval.batch_size = 256
  config.eval.head_fraction = 0.2          # long tail = outside the top 20%

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 500
  config.checkpoint.keep = 2
  return config
