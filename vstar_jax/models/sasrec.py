"""SASRec (Kang & McAuley 2018): causal self-attention over item ids.

The ID-based baseline. Each history item is one token: its item embedding
plus a learned position embedding, then LayerNorm and dropout, then post-LN
transformer blocks (attention and a GELU feed-forward, each with dropout,
residual and LayerNorm), as in RecBole's SASRec. A token attends to itself and
to the real items before it. The next item is scored from the hidden state of
the most recent item (column T-1 of a right-aligned history) by a dot product
with every item embedding: the input embedding table is tied as output
weights, so the scores are logits of a softmax over all N items.

Positions count back from the most recent item (column t has position
T-1-t), so the same history gives the same output at any padded width T;
original SASRec also pads on the left and embeds the column index.

Shapes: B users, T history, N items, D width, K list length.
"""
import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from vstar_jax.eval import history_rule

_INIT = nn.initializers.normal(0.02)   # RecBole's initializer_range


@dataclasses.dataclass(frozen=True)
class SasrecConfig:
  """Static architecture (defaults: RecBole's SASRec)."""
  num_items: int                   # N
  max_history: int = 20            # T at most
  width: int = 64                  # D
  num_layers: int = 2
  num_heads: int = 2
  inner_width: int = 256           # feed-forward hidden size
  hidden_dropout_rate: float = 0.5
  attn_dropout_rate: float = 0.5
  dtype: str = 'float32'           # compute dtype; parameters stay float32


@chex.dataclass(frozen=True)
class TopItems:
  """The K best-scored items per user, best first."""
  items: chex.Array   # [B, K] int32 item index
  scores: chex.Array  # [B, K] float32 logit


class _Block(nn.Module):
  """Post-LN transformer block: attention, then feed-forward."""
  cfg: SasrecConfig

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool):
    """x [B, T, D]; mask [B, 1, T, T] bool (query, key) -> [B, T, D]."""
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    attn = nn.MultiHeadDotProductAttention(
        num_heads=cfg.num_heads, dtype=dtype, kernel_init=_INIT,
        dropout_rate=cfg.attn_dropout_rate, broadcast_dropout=False,
        name='attention')(x, x, mask=mask, deterministic=deterministic)
    drop = nn.Dropout(cfg.hidden_dropout_rate, deterministic=deterministic)
    x = nn.LayerNorm(dtype=dtype, name='attention_norm')(x + drop(attn))
    h = nn.Dense(cfg.inner_width, dtype=dtype, kernel_init=_INIT,
                 name='ffn_in')(x)
    h = nn.Dense(cfg.width, dtype=dtype, kernel_init=_INIT,
                 name='ffn_out')(nn.gelu(h, approximate=False))
    return nn.LayerNorm(dtype=dtype, name='ffn_norm')(x + drop(h))


class SASRec(nn.Module):
  """Next-item logits over the whole catalogue from an item-id history."""
  cfg: SasrecConfig

  def setup(self):
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    self.item_embed = nn.Embed(cfg.num_items, cfg.width, dtype=dtype,
                               embedding_init=_INIT)
    self.position_embed = nn.Embed(cfg.max_history, cfg.width, dtype=dtype,
                                   embedding_init=_INIT)
    self.embed_norm = nn.LayerNorm(dtype=dtype)
    self.embed_dropout = nn.Dropout(cfg.hidden_dropout_rate)
    self.blocks = [_Block(cfg) for _ in range(cfg.num_layers)]

  def encode(self, history, history_mask, *, deterministic: bool = True):
    """Hidden state of every history position.

    Args:
      history: [B, T] int32 item indices, right-aligned, any value where
        history_mask is False.
      history_mask: [B, T] bool, True = real item.
      deterministic: disables dropout (else needs the 'dropout' rng).

    Returns:
      [B, T] -> [B, T, D]; position t depends only on the real items at
      columns <= t.
    """
    chex.assert_rank([history, history_mask], 2)
    chex.assert_type([history, history_mask], [int, bool])
    num_cols = history.shape[1]
    if num_cols > self.cfg.max_history:
      raise ValueError(f'history width {num_cols} exceeds max_history '
                       f'{self.cfg.max_history}')
    # Padding ids are arbitrary (-1): gather a valid row, then zero it.
    x = self.item_embed(jnp.maximum(history, 0))
    x = jnp.where(history_mask[..., None], x, jnp.zeros((), x.dtype))
    positions = jnp.arange(num_cols - 1, -1, -1)          # [T]
    x = x + self.position_embed(positions)[None]
    x = self.embed_dropout(self.embed_norm(x), deterministic=deterministic)
    causal = jnp.tril(jnp.ones((num_cols, num_cols), bool))
    mask = causal[None, None] & history_mask[:, None, None, :]
    for block in self.blocks:
      x = block(x, mask, deterministic=deterministic)
    return x

  def __call__(self, history, history_mask, *, deterministic: bool = True):
    """Logits of the next item. [B, T] -> [B, N] float32.

    The state of column T-1 (the most recent item) is scored against every
    item embedding. A row with no real item gives finite, meaningless logits.
    """
    h = self.encode(history, history_mask, deterministic=deterministic)
    return self.item_embed.attend(h[:, -1]).astype(jnp.float32)

  def candidate_logits(self, history, history_mask, candidates, *,
                       deterministic: bool = True):
    """Logits of given items only (sampled softmax). -> [B, C] float32.

    Args:
      history, history_mask: as in `encode`.
      candidates: [B, C] int32 item indices in [0, N).
      deterministic: disables dropout.

    Returns:
      [B, C], equal to `__call__`'s logits gathered at `candidates`, without
      scoring the whole catalogue.
    """
    chex.assert_rank(candidates, 2)
    h = self.encode(history, history_mask, deterministic=deterministic)
    items = self.item_embed(candidates)                    # [B, C, D]
    return jnp.einsum('bd,bcd->bc', h[:, -1], items).astype(jnp.float32)


def init_params(net: SASRec, rng_key: jax.Array):
  """Parameters for `net` (rng_key consumed)."""
  cfg = net.cfg
  history = jnp.zeros((1, cfg.max_history), jnp.int32)
  mask = jnp.ones((1, cfg.max_history), bool)
  return net.init({'params': rng_key}, history, mask)['params']


def top_items(net: SASRec, params, history, history_mask, *,
              list_len: int, exclude_history: bool = False) -> TopItems:
  """Exact top-K items over the full catalogue by logit.

  Args:
    net: the module.
    params: its parameters.
    history: [B, T] int32; history_mask: [B, T] bool.
    list_len: K <= N.
    exclude_history: the history rule (eval/history_rule.py). False: items
      already in the history can be recommended again (RecBole's sequential
      full ranking); True: their logits are -inf before the top-K, and slots
      left with -inf (K > N minus the history) come back as item -1.
  """
  logits = net.apply({'params': params}, history, history_mask)
  if exclude_history:
    logits = history_rule.mask_history_scores(logits, history, history_mask)
  scores, items = jax.lax.top_k(logits, list_len)
  items = jnp.where(jnp.isfinite(scores), items, -1)
  return TopItems(items=items.astype(jnp.int32), scores=scores)
