"""Attention scores as pure functions over a params dict.

Memory `m [batch, src_len, mem_dim]` (encoder outputs), query
`q [batch, query_dim]` (a decoder state). Scores:

* ``dot``        (Luong 2015):    ``q . m_s``
* ``general``    (Luong 2015):    ``q . (W_a m_s)``
* ``concat``     (Luong 2015):    ``v . tanh(W_a [m_s; q])``, ``W_a`` split into its
  memory and query columns so the memory half is computed once per sentence
* ``additive``   (Bahdanau 2015): ``v . tanh(W_1 m_s + W_2 q + b)``; the decoder
  queries it with its *previous* state, as Bahdanau does, the others with the
  current one (Luong)
* ``scaled_dot`` (Vaswani 2017):  ``q . m_s / sqrt(mem_dim)``

Each score is one entry of `SCORES`: its parameters (`init`), the part that
depends on the memory alone (`prepare_keys`, run once a sentence, outside the
decoder's scan), the scores of queries against those keys, and whether the
decoder queries it with its previous state (before the recurrent step) or its
current one. A new score is one entry there. Padded source positions get
weight 0.
"""

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from seq2seq_jax import ops

Params = dict[str, jax.Array]


class Score(NamedTuple):
  """An attention score as pure functions over its params dict.

  Attributes:
    init: `(key, memory_dim, query_dim, attention_dim) -> params`.
    prepare_keys: `(params, memory [batch, src_len, mem_dim]) -> keys
      [batch, src_len, key_dim]`, the memory-only part.
    scores: `(params, keys, queries [batch, tgt_len, query_dim]) -> scores
      [batch, tgt_len, src_len]`, unnormalised.
    queries_previous_state: True when the decoder queries with its state
      before the recurrent step (Bahdanau) and feeds the context into it;
      False when it queries with the new state (Luong).
  """
  init: Callable[..., Params]
  prepare_keys: Callable[[Params, jax.Array], jax.Array]
  scores: Callable[[Params, jax.Array, jax.Array], jax.Array]
  queries_previous_state: bool = False


_glorot = jax.nn.initializers.glorot_uniform()


def _no_params(key, memory_dim, query_dim, attention_dim, name):
  del key, attention_dim
  if memory_dim != query_dim:
    raise ValueError(f"attention {name!r} needs memory_dim == query_dim, got "
                     f"{memory_dim} and {query_dim}")
  return {}


def _memory_as_keys(params, memory):
  del params
  return memory


def dot_scores(params, keys, queries):
  del params
  return ops.einsum("btd,bsd->bts", queries, keys)


def scaled_dot_scores(params, keys, queries):
  return dot_scores(params, keys, queries) / math.sqrt(keys.shape[-1])


def general_init(key, memory_dim, query_dim, attention_dim):
  del attention_dim
  # The first of three keys, as concat's `w_memory`: the same initial weights
  # as before the scores became a registry.
  key = jax.random.split(key, 3)[0]
  return {"w_a": _glorot(key, (memory_dim, query_dim), jnp.float32)}


def general_keys(params, memory):
  return ops.matmul(memory, params["w_a"])


def concat_init(key, memory_dim, query_dim, attention_dim):
  """`W_a` of `v . tanh(W_a [m; q])` as its memory and query columns, and `v`."""
  k1, k2, k3 = jax.random.split(key, 3)
  return {
      "w_memory": _glorot(k1, (memory_dim, attention_dim), jnp.float32),
      "w_query": _glorot(k2, (query_dim, attention_dim), jnp.float32),
      "v": jax.random.uniform(k3, (attention_dim,), jnp.float32, -1.0, 1.0)
      / math.sqrt(attention_dim),
  }


def additive_init(key, memory_dim, query_dim, attention_dim):
  return {**concat_init(key, memory_dim, query_dim, attention_dim),
          "b": jnp.zeros((attention_dim,), jnp.float32)}


def concat_keys(params, memory):
  return ops.matmul(memory, params["w_memory"])


def additive_keys(params, memory):
  return concat_keys(params, memory) + params["b"]


def tanh_scores(params, keys, queries):
  """`v . tanh(keys + W_query q)` for every (query, source) pair."""
  q = ops.matmul(queries, params["w_query"])
  hidden = jnp.tanh(keys[:, None, :, :] + q[:, :, None, :].astype(keys.dtype))
  return ops.matmul(hidden, params["v"])


SCORES: dict[str, Score] = {
    "dot": Score(lambda k, m, q, a: _no_params(k, m, q, a, "dot"), _memory_as_keys,
                 dot_scores),
    "general": Score(general_init, general_keys, dot_scores),
    "concat": Score(concat_init, concat_keys, tanh_scores),
    "additive": Score(additive_init, additive_keys, tanh_scores, queries_previous_state=True),
    "scaled_dot": Score(lambda k, m, q, a: _no_params(k, m, q, a, "scaled_dot"),
                        _memory_as_keys, scaled_dot_scores),
}
ATTENTION_TYPES = ("none", *SCORES)  # "none": no attention at all


def get_score(name: str) -> Score:
  """Looks a score up by name, with an error that lists the valid names."""
  try:
    return SCORES[name]
  except (KeyError, TypeError):
    raise ValueError(f"unknown attention {name!r}; valid attention types: "
                     f"{', '.join(ATTENTION_TYPES)}") from None


def init(name: str, key: jax.Array, memory_dim: int, query_dim: int,
         attention_dim: int) -> Params:
  """Score parameters for attention `name` (empty for dot products)."""
  return get_score(name).init(key, memory_dim, query_dim, attention_dim)


def prepare_keys(name: str, params: Params, memory: jax.Array) -> jax.Array:
  """The memory-only part of the score, `[batch, src_len, key_dim]`."""
  return get_score(name).prepare_keys(params, memory)


def scores(name: str, params: Params, keys: jax.Array, queries: jax.Array) -> jax.Array:
  """Unnormalised scores `[batch, tgt_len, src_len]` of `queries [batch, tgt_len, query_dim]`."""
  return get_score(name).scores(params, keys, queries)


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis (source positions); exactly 0 where `mask` is False."""
  scores = ops.widen(scores)
  scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
  scores = scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
  weights = jnp.where(mask, jnp.exp(scores), 0.0)
  # A row with no real position (an all-padding batch row) gets all zeros.
  return weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1e-30)


def attend_all(name: str, params: Params, keys: jax.Array, memory: jax.Array,
               mask: jax.Array, queries: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Attention of several queries at once, as batched matmuls.

  Args:
    name: the score.
    params: its parameters.
    keys: `prepare_keys(name, params, memory)`.
    memory: `[batch, src_len, mem_dim]`.
    mask: `[batch, src_len]`, True on real source tokens.
    queries: `[batch, tgt_len, query_dim]`.

  Returns:
    context `[batch, tgt_len, mem_dim]` and weights `[batch, tgt_len, src_len]`.
  """
  weights = masked_softmax(scores(name, params, keys, queries), mask[:, None, :])
  return ops.einsum("bts,bsd->btd", weights, memory), weights


def attend(name: str, params: Params, keys: jax.Array, memory: jax.Array,
           mask: jax.Array, query: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One query a sentence: context `[batch, mem_dim]`, weights `[batch, src_len]`."""
  context, weights = attend_all(name, params, keys, memory, mask, query[:, None, :])
  return context[:, 0], weights[:, 0]
