"""Transformer pieces with explicit key/value caches.

The generative policy is a prefix-LM: the history items are a bidirectional
prefix, and the SID tokens of the next item attend to the whole history and
causally to each other. Attention is split into two key sets so that decoding
never copies the history per beam or per tree node:

  * context keys [B, T, H, Dh]: the history, shared by all queries of a user;
  * path keys [B, K, P, H, Dh]: the SID tokens already on a query's path
    (its ancestors in a beam or a VED tree), one set per beam/node.

Shapes: B users, K beams or nodes per user, Q new query tokens per beam, T
history length, P path length, H heads, Dh head size, D model width.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def _masked_scores(scores: jax.Array, mask: jax.Array) -> jax.Array:
  # finfo.min, not -inf: a fully masked row must not produce NaN.
  return jnp.where(mask, scores, jnp.finfo(scores.dtype).min)


class SplitAttention(nn.Module):
  """Multi-head attention over a shared context plus per-beam path keys."""
  num_heads: int
  head_dim: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.qkv = nn.DenseGeneral(
        (3, self.num_heads, self.head_dim), dtype=self.dtype, name='qkv')
    self.out = nn.DenseGeneral(
        self.num_heads * self.head_dim, axis=(-2, -1), dtype=self.dtype,
        name='out')

  def project(self, x: jax.Array):
    """x [..., D] -> q, k, v, each [..., H, Dh]."""
    qkv = self.qkv(x)
    return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

  def attend(self, q, ctx_k, ctx_v, ctx_mask, path_k, path_v, path_mask):
    """Attention of per-beam queries over context and path keys.

    Args:
      q: [B, K, Q, H, Dh] queries.
      ctx_k, ctx_v: [B, T, H, Dh] context (history) keys and values.
      ctx_mask: [B, T] bool, True = a real history item.
      path_k, path_v: [B, K, P, H, Dh] keys/values of path tokens.
      path_mask: [B, K, Q, P] bool, which path tokens each query may see.

    Returns:
      [B, K, Q, D] attention output after the output projection.
    """
    scale = 1.0 / jnp.sqrt(jnp.asarray(self.head_dim, q.dtype))
    s_ctx = jnp.einsum('bkqhd,bthd->bkqht', q, ctx_k) * scale
    s_ctx = _masked_scores(s_ctx, ctx_mask[:, None, None, None, :])
    s_path = jnp.einsum('bkqhd,bkphd->bkqhp', q, path_k) * scale
    s_path = _masked_scores(s_path, path_mask[:, :, :, None, :])
    num_ctx = ctx_k.shape[1]
    probs = jax.nn.softmax(
        jnp.concatenate([s_ctx, s_path], axis=-1).astype(jnp.float32),
        axis=-1).astype(q.dtype)
    out = (jnp.einsum('bkqht,bthd->bkqhd', probs[..., :num_ctx], ctx_v) +
           jnp.einsum('bkqhp,bkphd->bkqhd', probs[..., num_ctx:], path_v))
    return self.out(out)

  def self_attend(self, q, k, v, mask):
    """Plain attention within one sequence. q,k,v [B, S, H, Dh]; mask [B, S, S]."""
    scale = 1.0 / jnp.sqrt(jnp.asarray(self.head_dim, q.dtype))
    s = jnp.einsum('bqhd,bkhd->bhqk', q, k) * scale
    s = _masked_scores(s, mask[:, None, :, :])
    probs = jax.nn.softmax(s.astype(jnp.float32), axis=-1).astype(q.dtype)
    return self.out(jnp.einsum('bhqk,bkhd->bqhd', probs, v))


class Block(nn.Module):
  """Pre-LayerNorm transformer block whose attention keys can be cached."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.ln_attn = nn.LayerNorm(dtype=self.dtype, name='ln_attn')
    self.attn = SplitAttention(
        self.num_heads, self.head_dim, dtype=self.dtype, name='attn')
    self.ln_mlp = nn.LayerNorm(dtype=self.dtype, name='ln_mlp')
    self.mlp_in = nn.Dense(self.mlp_dim, dtype=self.dtype, name='mlp_in')
    self.mlp_out = nn.Dense(
        self.num_heads * self.head_dim, dtype=self.dtype, name='mlp_out')
    self.dropout = nn.Dropout(self.dropout_rate)

  def _mlp(self, x, deterministic):
    h = self.mlp_out(nn.gelu(self.mlp_in(self.ln_mlp(x))))
    return x + self.dropout(h, deterministic=deterministic)

  def encode(self, x, mask, deterministic: bool = True):
    """A full sequence with its own mask; also returns its keys and values.

    Args:
      x: [B, S, D] inputs.
      mask: [B, S, S] bool attention mask.
      deterministic: disables dropout.

    Returns:
      (y [B, S, D], k [B, S, H, Dh], v [B, S, H, Dh]).
    """
    q, k, v = self.attn.project(self.ln_attn(x))
    h = self.attn.self_attend(q, k, v, mask)
    x = x + self.dropout(h, deterministic=deterministic)
    return self._mlp(x, deterministic), k, v

  def decode(self, x, ctx_k, ctx_v, ctx_mask, path_k, path_v, path_mask,
             deterministic: bool = True):
    """New tokens [B, K, Q, D] over cached context and path keys.

    The new tokens see each other causally (query i sees new keys <= i), in
    addition to the path keys `path_mask` allows.

    Returns:
      (y [B, K, Q, D], k [B, K, Q, H, Dh], v [B, K, Q, H, Dh]).
    """
    q, k, v = self.attn.project(self.ln_attn(x))
    num_q = x.shape[2]
    causal = jnp.tril(jnp.ones((num_q, num_q), bool))
    all_k = jnp.concatenate([path_k, k], axis=2)
    all_v = jnp.concatenate([path_v, v], axis=2)
    all_mask = jnp.concatenate(
        [path_mask,
         jnp.broadcast_to(causal, path_mask.shape[:2] + causal.shape)],
        axis=-1)
    h = self.attn.attend(q, ctx_k, ctx_v, ctx_mask, all_k, all_v, all_mask)
    x = x + self.dropout(h, deterministic=deterministic)
    return self._mlp(x, deterministic), k, v


def prefix_lm_mask(ctx_mask: jax.Array) -> jax.Array:
  """Bidirectional mask among real history items. [B, T] -> [B, T, T].

  Padding rows attend to themselves only, so their softmax stays finite.
  """
  num = ctx_mask.shape[-1]
  eye = jnp.eye(num, dtype=bool)
  return (ctx_mask[:, None, :] & ctx_mask[:, :, None]) | eye[None]


def maybe_stop_gradient(x: jax.Array, stop: Optional[bool]) -> jax.Array:
  return jax.lax.stop_gradient(x) if stop else x
