"""Defaults shared by every config; named configs override what differs."""
import ml_collections


# Model sizes: (width, layers, heads, mlp ratio). 'cpu' is the default;
# 'tiger' matches TIGER's 4+4-layer d=128 budget as one 6-layer prefix-LM
# (history and SID tokens share the stack); the larger ones are for GPU/TPU.
MODEL_SIZES = {
    'tiny': (32, 1, 2, 4),
    'cpu': (128, 2, 4, 4),
    'tiger': (128, 6, 4, 8),
    'base': (512, 8, 8, 4),
    'large': (1024, 16, 16, 4),
}


def set_model_size(config: ml_collections.ConfigDict, size: str) -> None:
  if size not in MODEL_SIZES:
    raise ValueError(f'model size {size!r}: expected one of '
                     f'{sorted(MODEL_SIZES)}')
  width, layers, heads, mlp = MODEL_SIZES[size]
  config.model.width = width
  config.model.num_layers = layers
  config.model.num_heads = heads
  config.model.mlp_ratio = mlp
  config.model.value_width = width


def base_config() -> ml_collections.ConfigDict:
  """All fields a run reads, with CPU-sized defaults."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.stages = 'sft'                    # comma-separated: 'sft', 'sft,rl', 'rl'
  # A run directory whose SFT best checkpoint starts RL when 'sft' is not
  # among the stages, and starts SFT when it is (the CE control, issue 12).
  config.init_from = ''

  config.log_every = 50
  # > 0: stop after this many optimizer steps in this invocation, with a
  # checkpoint (job time limits, resume tests); rerun to continue.
  config.stop_after_steps = 0
  # Optimizer steps per jitted call (a lax.scan over batches already on the
  # device). Logging, evaluation, checkpoints and preemption are handled
  # between calls, so log_every, *.eval_every, *.num_steps,
  # checkpoint.every_steps and stop_after_steps must be multiples of it.
  # 1 on CPU (compute-bound: results/benchmarks/train_cpu.md).
  config.steps_per_call = 1
  # A label only (results.json), set by launch/configs/ablation.py.
  config.ablation = ''

  config.data = ml_collections.ConfigDict()
  config.data.dir = 'testdata/movielens'
  config.data.name = 'ml-latest-small'
  config.data.index = ml_collections.FieldReference(None, field_type=str)
  config.data.protocol = 'leave_one_out'   # or 'chronological'
  config.data.max_history = 20
  # A precomputed index whose items share SIDs: 'error', or 'extra_level'
  # (TIGER: append each item's rank within its collision group).
  config.data.sid_collisions = 'error'
  # Fresh-prompt protocol (issue 12, leave_one_out only): withhold the last
  # k training windows of each user from SFT; they are RL's prompt pool.
  # 0: SFT and RL read every training window.
  config.data.fresh_windows = 0

  # SIDs built by our tokenizer when config.data.index is empty (cached in
  # WORKDIR/sids/); item-text embeddings are cached across runs.
  config.sid = ml_collections.ConfigDict()
  config.sid.num_levels = 3
  config.sid.codebook_size = 256
  config.sid.num_iters = 20
  config.sid.balanced = True
  config.sid.collisions = 'reassign'       # or 'extra_level'
  config.sid.seed = 0
  # What residual k-means reads: 'text' (MiniLM item-text embeddings),
  # 'cf' (the item table of a collaborative model) or 'text+cf' (both,
  # each row L2-normalised, side by side). 'cf' trains config.sid.cf_model,
  # a config file like --config (PATH.py[:ARG], e.g. an ID model such as
  # launch/configs/sasrec_scientific.py), on the run's training windows in
  # WORKDIR/cf_model/ first, seeded by config.sid.seed.
  config.sid.inputs = 'text'
  config.sid.cf_model = ''
  config.embedding_cache_dir = '.cache/embeddings'

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
  # Hybrid ID + SID inputs (sid): each history item's token also gets a
  # learned per-item embedding [num_items, width]; decoded tokens stay SID
  # codes.
  config.model.item_id_embedding = False

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
  # 'sft_windows', or 'rl_prompts': exactly the windows RL reads (the CE
  # control; with config.init_from it continues an SFT run).
  config.sft.train_on = 'sft_windows'
  # Learning rate at the end of the cosine, relative to the peak; 1.0 keeps
  # it constant after the warmup.
  config.sft.end_lr_ratio = 0.0
  # Label smoothing eps in [0, 1) of the next-code cross-entropy (sid): eps
  # spread over the codes the softmax covers (the trie-valid ones when
  # constrained_softmax). Also the CE control's loss.
  config.sft.label_smoothing = 0.0

  # SASRec's loss (config.model.kind='sasrec'): 'full' softmax over all
  # items, or 'sampled' softmax over the target and num_negatives items drawn
  # by negative_sampling ('uniform', with replacement; hits of the target
  # are masked).
  config.sasrec = ml_collections.ConfigDict()
  config.sasrec.loss = 'full'
  config.sasrec.num_negatives = 256
  config.sasrec.negative_sampling = 'uniform'

  # RL rollouts (spec section 5); costs are decoder tokens per prompt.
  config.rollout = ml_collections.ConfigDict()
  config.rollout.kind = 'ved'              # 'ved' | 'beam' | 'sample'
  config.rollout.num_candidates = 16       # G
  config.rollout.beam_width = 16           # for kind='beam'
  config.rollout.temperature = 1.0
  config.rollout.ved_init_beam = 8         # B0
  config.rollout.ved_kappa = 2.0           # budget = kappa * (1 + (L-1) B0)
  config.rollout.ved_budget = 0            # > 0 overrides kappa
  config.rollout.ved_lambda = 0.1          # entropy weight in G(s)
  config.rollout.ved_beta = 1.0            # UCB exploration weight
  # VED switches (decoding/ved/search.py; these values are the paper's).
  config.rollout.ved_evaluate_leaves = True  # leaves get their own V (cost 1)
  config.rollout.ved_rank = 'value'        # 'value' | 'logp' | 'mixed'
  config.rollout.ved_rank_weight = 1.0     # w in 'mixed': log-prob + w * V
  config.rollout.ved_selection = 'tree'    # 'tree' (arg-max U) | 'walk'
  config.rollout.ved_normalize_depth = False  # G as a z-score per depth
  config.rollout.ved_nodes_per_iter = 1    # m nodes evaluated per iteration
  # V on every node even where the search reads none (e.g. at the beam's
  # budget with log-prob ranking), for the rl/ved/value_auc diagnostics.
  config.rollout.ved_diagnose_values = False
  config.rollout.ved_gate_filters = False   # True: only gate-passing nodes selectable

  # V-STAR RL (spec sections 6-8).
  config.rl = ml_collections.ConfigDict()
  config.rl.batch_size = 64                # prompts per update
  config.rl.num_epochs = 1
  config.rl.num_steps = 0                  # > 0 overrides num_epochs
  config.rl.learning_rate = 1e-4
  config.rl.value_learning_rate = 1e-3
  config.rl.warmup_steps = 10
  config.rl.weight_decay = 0.0
  config.rl.grad_clip = 0.3
  config.rl.reward = 'ranking'             # 'ranking' | 'exact' | 'prefix'
  config.rl.grpo_weight = 1.0
  config.rl.sibling_alpha = 1.0            # 0: plain GRPO
  # Sibling groups whose rewards' std is below this get no J_sib (0: off).
  config.rl.sibling_min_std = 0.0
  config.rl.clip_eps = 0.2
  # K optimizer steps on each rollout batch (one jitted lax.scan); with K > 1
  # the ratio to the rollout policy moves and clip_eps acts. 1: the paper.
  config.rl.updates_per_rollout = 1
  config.rl.kl_beta = 1e-3
  config.rl.value_coef = 0.5               # 0: no value training
  config.rl.gamma = 0.99
  config.rl.step_weights = (0.3, 0.5, 1.0)  # one per SID level
  # Value pre-training: value-only steps before RL (policy frozen: its LR is
  # 0), TD(0) on the dense step rewards of config.rollout's groups; with
  # rl.num_steps = rl.num_epochs = 0 the run is the pre-training alone.
  config.rl.value_warmup_steps = 0
  config.rl.item_embeddings = 'text'       # dense reward embeddings
  config.rl.eval_every = 100
  config.rl.early_stop_patience = 0
  # With config.data.fresh_windows > 0: also draw prompts from SFT's windows.
  config.rl.replay_sft_windows = False

  config.eval = ml_collections.ConfigDict()
  config.eval.beam_width = 50              # reporting width
  config.eval.valid_beam = 20              # during training (subset)
  config.eval.valid_subset = 2000          # users; <= 0 means all
  config.eval.batch_size = 256
  config.eval.head_fraction = 0.2          # long tail = outside the top 20%
  # Validate the starting parameters (step 0) of a stage that starts from a
  # trained model (RL, or SFT with config.init_from), so selection can keep
  # the start when no step beats it (issue 12).
  config.eval.validate_start = False
  # The history rule, the same for every model (vstar_jax/eval/history_rule):
  # False keeps items of the user's history in the ranked lists (the TIGER /
  # LC-Rec / RecBole-sequential protocol of our tables); True excludes them
  # (validation and test alike).
  config.eval.exclude_history = False

  # Device mesh (vstar_jax/parallel.py): batches split over `data` (-1: all
  # devices that `model` leaves); `model` is reserved for tensor parallelism
  # (its devices hold replicas). fsdp: split each parameter (and its
  # optimizer moments) of >= fsdp_min_size elements over `data`.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.model = 1
  config.mesh.fsdp = False
  config.mesh.fsdp_min_size = 2 ** 14

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 500
  config.checkpoint.keep = 2
  return config
