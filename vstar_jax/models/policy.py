"""The generative policy pi(y | x) and the prefix value head V(x, y_<=l).

One flax module, one parameter pytree: a prefix-LM transformer whose prefix is
the user's history (each item one token, the sum of its SID code embeddings
plus a recency embedding and, with `num_items` > 0, a learned embedding of
the item's id: hybrid ID + SID inputs) and whose decoder tokens are the SID
path of the next item: BOS, y_1, ..., y_L. The token at depth d (BOS is
depth 0) emits the logits of level d+1 and the value of the prefix state
s_d = (x, y_<=d).

The value head is a shallow transformer block plus an MLP over the trunk's
hidden states (spec section 3). Whether its loss reaches the trunk is
`value_grad_to_trunk`.

Decoding reuses the history encoding: `encode_history` runs the history once;
`decode` evaluates new tokens against that context and the cached keys of
their path. Scoring one more prefix token costs one decoder token.

The value block only runs when asked (`with_value`): SFT, beam search and
sampling never read values, and skipping the block removes a third of the
SFT step's FLOPs (results/benchmarks/README.md). Whether a Context carries
the value block is read from its shape: Y = num_layers (+ 1 with values).

Shapes: B users, K beams/nodes per user, Q new tokens per beam, T history, P
cached path tokens, L SID levels, V codes per level, D width, H heads,
Dh head size, Y cached layers (trunk blocks, + the value block).
"""
import dataclasses
from typing import Optional, Union

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from vstar_jax.models import layers


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  """Static architecture of the policy/value network."""
  num_levels: int                # L
  vocab_size: int                # V, codes per level (max over levels)
  max_history: int               # T
  width: int                     # D
  num_layers: int
  num_heads: int
  mlp_ratio: int
  dropout_rate: float
  value_width: int
  value_grad_to_trunk: bool
  dtype: str                     # compute dtype; parameters stay float32
  # N > 0: history tokens also get a learned [N, D] item-id embedding
  # (decoder tokens stay SID codes); 0: SID codes only.
  num_items: int = 0

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads


@chex.dataclass(frozen=True)
class Context:
  """Encoded history of a batch of users, cached for every layer."""
  k: chex.Array     # [Y, B, T, H, Dh]
  v: chex.Array     # [Y, B, T, H, Dh]
  mask: chex.Array  # [B, T] bool, True = real history item


@chex.dataclass(frozen=True)
class Path:
  """Cached keys of decoder tokens already evaluated on each beam's path."""
  k: chex.Array     # [Y, B, K, P, H, Dh]
  v: chex.Array     # [Y, B, K, P, H, Dh]
  mask: chex.Array  # [B, K, Q, P] bool, which path tokens each query sees


@chex.dataclass(frozen=True)
class StepOutput:
  """Outputs for newly decoded tokens."""
  logits: chex.Array  # [B, K, Q, V] float32, logits of the next level
  value: Optional[chex.Array]  # [B, K, Q] float32 V(s); None without value
  k: chex.Array       # [Y, B, K, Q, H, Dh] keys of the new tokens
  v: chex.Array       # [Y, B, K, Q, H, Dh]


def empty_path(cfg: PolicyConfig, batch: int, beams: int, queries: int,
               dtype=jnp.float32, with_value: bool = True) -> Path:
  """A path with no cached tokens (P = 0), e.g. for teacher forcing."""
  num_cached = cfg.num_layers + int(with_value)
  shape = (num_cached, batch, beams, 0, cfg.num_heads, cfg.head_dim)
  return Path(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
              mask=jnp.zeros((batch, beams, queries, 0), bool))


class PolicyValueNet(nn.Module):
  """Prefix-LM SID policy with a value head; see the module docstring."""
  cfg: PolicyConfig

  def setup(self):
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    init = nn.initializers.normal(0.02)
    # Code embeddings shared by history items and decoder tokens; index
    # level * V + code.
    self.code_embed = self.param(
        'code_embed', init, (cfg.num_levels * cfg.vocab_size, cfg.width))
    self.bos = self.param('bos', init, (cfg.width,))
    self.depth_embed = self.param(
        'depth_embed', init, (cfg.num_levels + 1, cfg.width))
    self.recency_embed = self.param(
        'recency_embed', init, (cfg.max_history, cfg.width))
    block = lambda name: layers.Block(
        cfg.num_heads, cfg.head_dim, cfg.mlp_ratio * cfg.width,
        cfg.dropout_rate, dtype=dtype, name=name)
    self.blocks = [block(f'block_{i}') for i in range(cfg.num_layers)]
    self.final_ln = nn.LayerNorm(dtype=dtype, name='final_ln')
    self.head_w = self.param(
        'head_w', init, (cfg.num_levels, cfg.width, cfg.vocab_size))
    self.head_b = self.param(
        'head_b', nn.initializers.zeros, (cfg.num_levels, cfg.vocab_size))
    self.value_block = block('value_block')
    self.value_ln = nn.LayerNorm(dtype=dtype, name='value_ln')
    self.value_hidden = nn.Dense(cfg.value_width, name='value_hidden')
    self.value_out = nn.Dense(1, name='value_out')
    self.dropout = nn.Dropout(cfg.dropout_rate)
    if cfg.num_items:
      # Created last: parameters draw their init keys in creation order, so
      # the other parameters start as in the SID-only model.
      self.item_embed = self.param(
          'item_embed', init, (cfg.num_items, cfg.width))

  # -- embeddings ------------------------------------------------------------

  def _embed_codes(self, codes: jax.Array, levels: jax.Array) -> jax.Array:
    levels = jnp.broadcast_to(levels, codes.shape)
    flat = levels * self.cfg.vocab_size + jnp.maximum(codes, 0)
    return jnp.take(self.code_embed, flat, axis=0)

  def _history_tokens(self, history_codes, history_mask, history_items):
    """[B, T, L] codes, [B, T] mask, [B, T] ids -> [B, T, D] item tokens."""
    num_levels = self.cfg.num_levels
    emb = self._embed_codes(history_codes, jnp.arange(num_levels)).sum(-2)
    if self.cfg.num_items:
      if history_items is None:
        raise ValueError('PolicyConfig.num_items > 0 needs history_items')
      chex.assert_equal_shape([history_items, history_mask])
      emb = emb + jnp.take(self.item_embed, jnp.maximum(history_items, 0),
                           axis=0)
    # Recency rank 0 = the most recent real item, whatever the padding side.
    rank = jnp.cumsum(history_mask[:, ::-1], axis=1)[:, ::-1] - 1
    emb = emb + jnp.take(self.recency_embed, jnp.maximum(rank, 0), axis=0)
    return jnp.where(history_mask[..., None], emb, 0.)

  def _decoder_tokens(self, codes, depths):
    """Token at depth d >= 1 carries the level-(d-1) code; depth 0 is BOS."""
    level = jnp.maximum(depths - 1, 0)
    code_emb = self._embed_codes(codes, level)
    bos = jnp.broadcast_to(self.bos, code_emb.shape)
    emb = jnp.where((depths > 0)[..., None], code_emb, bos)
    return emb + jnp.take(self.depth_embed, depths, axis=0)

  # -- value head ------------------------------------------------------------

  def _value_input(self, h):
    return layers.maybe_stop_gradient(h, not self.cfg.value_grad_to_trunk)

  def _value_readout(self, h):
    h = nn.gelu(self.value_hidden(self.value_ln(h)))
    return self.value_out(h)[..., 0].astype(jnp.float32)

  # -- public methods --------------------------------------------------------

  def encode_history(self, history_codes, history_mask,
                     deterministic: bool = True,
                     with_value: bool = True,
                     history_items: Optional[jax.Array] = None) -> Context:
    """Runs the history prefix through every layer once.

    Args:
      history_codes: [B, T, L] int32 SID codes of the history items.
      history_mask: [B, T] bool, True = real item.
      deterministic: disables dropout.
      with_value: also encode for the value block (Y = num_layers + 1).
      history_items: [B, T] int32 item indices of the history (padding any
        value); read iff cfg.num_items > 0, required then.

    Returns:
      The Context the decoder tokens attend to.
    """
    chex.assert_rank([history_codes, history_mask], [3, 2])
    dtype = jnp.dtype(self.cfg.dtype)
    x = self._history_tokens(history_codes, history_mask,
                             history_items).astype(dtype)
    x = self.dropout(x, deterministic=deterministic)
    mask = layers.prefix_lm_mask(history_mask)
    ks, vs = [], []
    for block in self.blocks:
      x, k, v = block.encode(x, mask, deterministic)
      ks.append(k)
      vs.append(v)
    if with_value:
      _, k, v = self.value_block.encode(self._value_input(x), mask,
                                        deterministic)
      ks.append(k)
      vs.append(v)
    return Context(k=jnp.stack(ks), v=jnp.stack(vs), mask=history_mask)

  def decode(self, context: Context, codes, depths, path: Path,
             deterministic: bool = True,
             head_level: Union[None, int, str] = None) -> StepOutput:
    """Evaluates new decoder tokens.

    Args:
      context: the users' encoded history (B users); the value is computed
        iff it carries the value block.
      codes: [B, K, Q] int32, the code each new token carries (ignored at
        depth 0).
      depths: [B, K, Q] int32 in [0, L], the token's depth (0 = BOS).
      path: cached keys of tokens before the new ones; each new token also
        sees the new tokens before it in Q (causal).
      deterministic: disables dropout.
      head_level: which output head to apply: None picks the head of each
        token's depth (tree nodes at mixed depths); an int applies that
        level's head to every token (a beam step); 'position' applies head
        q to query q (teacher forcing over BOS, y_1, ...).

    Returns:
      StepOutput: logits for the level after each token (level = depth;
      meaningless at depth L), the value of the prefix ending at each token
      (None without the value block), and the new tokens' keys/values.
    """
    chex.assert_rank([codes, depths], 3)
    chex.assert_equal_shape([codes, depths])
    dtype = jnp.dtype(self.cfg.dtype)
    x = self._decoder_tokens(codes, depths).astype(dtype)
    x = self.dropout(x, deterministic=deterministic)
    new_k, new_v = [], []
    for i, block in enumerate(self.blocks):
      x, k, v = block.decode(
          x, context.k[i], context.v[i], context.mask, path.k[i], path.v[i],
          path.mask, deterministic)
      new_k.append(k)
      new_v.append(v)
    value = None
    if context.k.shape[0] == self.cfg.num_layers + 1:
      hv, k, v = self.value_block.decode(
          self._value_input(x), context.k[-1], context.v[-1], context.mask,
          path.k[-1], path.v[-1], path.mask, deterministic)
      new_k.append(k)
      new_v.append(v)
      value = self._value_readout(hv)
    h = self.final_ln(x).astype(jnp.float32)
    return StepOutput(logits=self._logits(h, depths, head_level), value=value,
                      k=jnp.stack(new_k), v=jnp.stack(new_v))

  def _logits(self, h, depths, head_level):
    """[B, K, Q, D] hidden states -> [B, K, Q, V] logits of the next level."""
    num_levels = self.cfg.num_levels
    if isinstance(head_level, int):
      return (jnp.einsum('bkqd,dv->bkqv', h, self.head_w[head_level]) +
              self.head_b[head_level][None, None, None])
    if head_level == 'position':
      q = min(h.shape[2], num_levels)
      logits = (jnp.einsum('bkqd,qdv->bkqv', h[:, :, :q], self.head_w[:q]) +
                self.head_b[None, None, :q])   # [1, 1, q, V]
      pad = h.shape[2] - q             # the depth-L token has no next level
      return jnp.pad(logits, ((0, 0), (0, 0), (0, pad), (0, 0)))
    if head_level is not None:
      raise ValueError(f'head_level={head_level!r}')
    all_logits = (jnp.einsum('bkqd,ldv->bkqlv', h, self.head_w) +
                  self.head_b[None, None, None])
    level = jnp.minimum(depths, num_levels - 1)
    return jnp.take_along_axis(
        all_logits, level[..., None, None], axis=-2)[..., 0, :]

  def __call__(self, history_codes, history_mask, target_codes,
               deterministic: bool = True, with_value: bool = True,
               history_items: Optional[jax.Array] = None):
    """Teacher forcing over the full SID path of the target item.

    Args:
      history_codes: [B, T, L] int32.
      history_mask: [B, T] bool.
      target_codes: [B, L] int32 SID of the target item.
      deterministic: disables dropout.
      with_value: also compute the values.
      history_items: [B, T] int32 item indices (see encode_history).

    Returns:
      (logits [B, L, V] float32 for levels 1..L, values [B, L+1] float32 of
      the prefix states s_0..s_L, or None without values).
    """
    chex.assert_rank(target_codes, 2)
    batch, num_levels = target_codes.shape
    context = self.encode_history(history_codes, history_mask, deterministic,
                                  with_value, history_items)
    codes = jnp.concatenate(
        [jnp.zeros((batch, 1), jnp.int32), target_codes], axis=1)[:, None]
    depths = jnp.broadcast_to(jnp.arange(num_levels + 1), codes.shape)
    out = self.decode(context, codes, depths,
                      empty_path(self.cfg, batch, 1, num_levels + 1,
                                 context.k.dtype, with_value), deterministic,
                      head_level='position')
    values = None if out.value is None else out.value[:, 0]
    return out.logits[:, 0, :num_levels], values


def init_params(cfg: PolicyConfig, rng_key: jax.Array):
  """Initial parameters from a typed key (consumed)."""
  net = PolicyValueNet(cfg)
  batch, hist = 2, cfg.max_history
  return net.init(
      rng_key,
      jnp.zeros((batch, hist, cfg.num_levels), jnp.int32),
      jnp.ones((batch, hist), bool),
      jnp.zeros((batch, cfg.num_levels), jnp.int32),
      history_items=jnp.zeros((batch, hist), jnp.int32))['params']


def masked_log_softmax(logits: jax.Array, valid_mask: jax.Array) -> jax.Array:
  """Log-probs renormalised over valid codes; invalid codes get -inf.

  The policy is the trie-constrained distribution everywhere (SFT loss,
  beam search, VED, RL ratios), so scores are log-probabilities of items.
  A row with no valid code yields all -inf (a dead beam), never a uniform
  fallback.
  """
  masked = jnp.where(valid_mask, logits, jnp.finfo(logits.dtype).min)
  logp = jax.nn.log_softmax(masked, axis=-1)
  return jnp.where(valid_mask, logp, -jnp.inf)


def num_params(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
