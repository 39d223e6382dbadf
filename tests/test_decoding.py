"""Decoding against independent references: greedy, brute-force search, forced scores, formulas."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax import decoding
from seq2seq_jax.decoding import DecodeOptions as Options
from seq2seq_jax.models.rnn import RNNConfig, RNNSeq2Seq
from seq2seq_jax.models.transformer import TransformerConfig, TransformerSeq2Seq
from seq2seq_jax.tokens import EOS_ID, PAD_ID, SOS_ID

SRC_VOCAB = 11


def make(seed=0, tgt_vocab=12, sharpen=4.0, family="rnn", **kw):
  """A random model whose output distributions are far from uniform."""
  if family == "transformer":
    defaults = dict(src_vocab_size=SRC_VOCAB, tgt_vocab_size=tgt_vocab, d_model=8, num_heads=2,
                    ff_dim=16, encoder_layers=2, decoder_layers=2, dropout=0.0)
    model = TransformerSeq2Seq(TransformerConfig(**{**defaults, **kw}))
  else:
    defaults = dict(src_vocab_size=SRC_VOCAB, tgt_vocab_size=tgt_vocab, embed_dim=6,
                    hidden_dim=8, attention_dim=5, cell="lstm", attention="general")
    model = RNNSeq2Seq(RNNConfig(**{**defaults, **kw}))
  src = source_batch(seed)
  params = model.init(jax.random.PRNGKey(seed), src, src)["params"]
  output = params if family == "transformer" else params["decoder"]
  name = "out_w" if "out_w" in output else "tgt_embedding"  # tied: the embedding projects
  output[name] = output[name] * sharpen
  return model, params, src


def source_batch(seed, batch=3, src_len=6):
  rng = np.random.default_rng(seed)
  src = np.zeros((batch, src_len), np.int32)
  for b in range(batch):
    n = src_len if b == 0 else int(rng.integers(2, src_len + 1))
    src[b, :n] = rng.integers(4, SRC_VOCAB, n)
  return src


def forced(model, params, src, tokens):
  """Forced-decoding log-probs of hypotheses `tokens [batch, N, L]`: `[batch, N]`."""
  batch, n, length = tokens.shape
  _, per_sentence = decoding.forced_log_probs(
      model, params, jnp.repeat(jnp.asarray(src), n, axis=0),
      jnp.asarray(tokens).reshape(batch * n, length))
  return np.asarray(per_sentence).reshape(batch, n)


def python_greedy(model, params, src, max_len):
  """Reference greedy decoding: a Python loop over the model's `decode_step` with numpy argmax."""
  mem, state = model.apply({"params": params}, jnp.asarray(src),
                           method=lambda m, s: m.decoder_start(m.encode(s)))
  tokens = np.full(len(src), SOS_ID)
  out = np.full((len(src), max_len), PAD_ID)
  done = np.zeros(len(src), bool)
  for t in range(max_len):
    state, logits, _ = model.apply({"params": params}, mem, state, jnp.asarray(tokens),
                                   method=lambda m, *a: m.decode_step(*a))
    logits = np.asarray(logits, np.float64)
    logits[:, [PAD_ID, SOS_ID]] = -np.inf
    tokens = logits.argmax(-1)
    out[~done, t] = tokens[~done]
    done |= tokens == EOS_ID
  return out


VARIANTS = [
    dict(cell="lstm", attention="none"),
    dict(cell="gru", attention="dot", bidirectional=True),
    dict(cell="rnn", attention="general", input_feeding=True),
    dict(cell="ln_lstm", attention="concat", num_layers=2),
    dict(cell="lstm", attention="additive", input_feeding=True, reverse_source=True),
    dict(cell="gru", attention="scaled_dot", context_every_step=True, decoder_init="learned"),
    dict(family="transformer"),
    dict(family="transformer", norm="pre", positions="learned", tie_output=True),
]
KW = dict(max_len_a=1.0, max_len_b=2)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_greedy_and_beam_agree_with_references(variant):
  model, params, src = make(**variant)
  max_len = decoding.max_length(src.shape[1], **KW)
  greedy = decoding.greedy(model, params, src, Options(length_penalty=0.0, **KW))
  expected = python_greedy(model, params, src, max_len)
  lengths = np.asarray(greedy.lengths[:, 0])
  for b in range(len(src)):
    np.testing.assert_array_equal(greedy.tokens[b, 0, :lengths[b]], expected[b, :lengths[b]])
  # Beam size 1 is exactly greedy.
  beam1 = decoding.beam_search(model, params, src, Options(beam_size=1, length_penalty=0.0, **KW))
  np.testing.assert_array_equal(beam1.tokens, greedy.tokens)
  np.testing.assert_array_equal(beam1.lengths, greedy.lengths)
  # Without a length penalty every returned hypothesis's score is its forced log-prob.
  for out in (greedy, decoding.beam_search(model, params, src,
              Options(beam_size=4, length_penalty=0.0, **KW))):
    np.testing.assert_allclose(out.scores, forced(model, params, src, np.asarray(out.tokens)),
                               atol=1e-4)
    np.testing.assert_allclose(out.scores, out.log_probs, atol=0)
  if model.has_attention:
    assert greedy.attention.shape == (len(src), 1, max_len, src.shape[1])


def test_beam_hypotheses_are_well_formed_and_sorted():
  """Every hypothesis has one EOS, at its end (a finished one is never
  extended), or reaches its maximum length; best first; scores follow the
  length penalty formula."""
  model, params, src = make(seed=3, tgt_vocab=7, sharpen=2.0)
  out = decoding.beam_search(model, params, src, Options(beam_size=6, length_penalty=0.8, **KW))
  src_len = (src != PAD_ID).sum(1)
  limit = np.floor(KW["max_len_a"] * src_len + KW["max_len_b"]).astype(int)
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  seen_short = False
  for b, k in itertools.product(range(len(src)), range(6)):
    n = lengths[b, k]
    row = tokens[b, k]
    assert 1 <= n <= limit[b]
    assert np.all(row[n:] == PAD_ID) and np.all(row[:n] != PAD_ID)
    assert EOS_ID not in row[:n - 1]
    assert row[n - 1] == EOS_ID or n == limit[b]
    seen_short |= bool(row[n - 1] == EOS_ID and n < limit[b])
  assert seen_short
  assert np.all(np.diff(out.scores, axis=1) <= 0)
  np.testing.assert_allclose(out.log_probs, forced(model, params, src, tokens), atol=1e-4)
  np.testing.assert_allclose(out.scores, out.log_probs / ((5.0 + lengths) / 6.0) ** 0.8,
                             rtol=1e-6)


def _brute_force(model, params, src_row, max_len, alpha, kind):
  """Every possible output (ending in EOS, or of the maximum length) with its score."""
  vocab = model.config.tgt_vocab_size
  words = [t for t in range(vocab) if t not in (PAD_ID, SOS_ID, EOS_ID)]
  seqs = [list(p) + [EOS_ID] for n in range(max_len) for p in itertools.product(words, repeat=n)]
  seqs += [list(p) for p in itertools.product(words, repeat=max_len)]
  tgt = np.full((len(seqs), max_len), PAD_ID, np.int32)
  for i, s in enumerate(seqs):
    tgt[i, :len(s)] = s
  _, lp = decoding.forced_log_probs(model, params, jnp.asarray(np.repeat(src_row[None], len(seqs),
                                                                          0)), jnp.asarray(tgt))
  lengths = np.array([len(s) for s in seqs], np.float64)
  base = (5.0 + lengths) / 6.0 if kind == "gnmt" else lengths
  return tgt, np.asarray(lp, np.float64) / base ** alpha


FAMILY_KW = {"rnn": dict(attention="dot", input_feeding=True), "transformer": {}}


@pytest.mark.parametrize("alpha,kind,family", [(0.0, "gnmt", "rnn"), (1.0, "gnmt", "rnn"),
                                               (1.0, "average", "rnn"),
                                               (0.0, "gnmt", "transformer"),
                                               (1.0, "average", "transformer")])
def test_wide_beam_finds_the_brute_force_best(alpha, kind, family):
  """A beam wider than the number of prefixes is exact: its n-best list is the
  brute-force ranking of all (4 + 4^2 + ... ) sequences over a 3-word vocabulary."""
  model, params, src = make(seed=1, tgt_vocab=6, sharpen=3.0, family=family,
                            **FAMILY_KW[family])
  # 3 words + EOS: at most 27 live prefixes; of the 108 candidates of the last
  # step (all of one length) the 81 best are more than any top 10 needs.
  max_len, k = 4, 81
  out = decoding.beam_search(model, params, src,
                             Options(beam_size=k, length_penalty=alpha, length_penalty_type=kind,
                                     max_len_a=0.0, max_len_b=max_len))
  for b in range(len(src)):
    tgt, scores = _brute_force(model, params, src[b], max_len, alpha, kind)
    order = np.argsort(-scores, kind="stable")
    np.testing.assert_array_equal(out.tokens[b, 0], tgt[order[0]])
    np.testing.assert_allclose(out.scores[b, :10], scores[order[:10]], atol=1e-4)


def _repeats_an_ngram(seq, n) -> bool:
  grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
  return len(set(grams)) < len(grams)


@pytest.mark.parametrize("min_len,no_repeat,penalty,family", [(2, 2, 1.0, "rnn"),
                                                              (1, 1, 1.5, "transformer")])
def test_constrained_beam_finds_the_brute_force_best_of_the_allowed(min_len, no_repeat, penalty,
                                                                    family):
  """Constraints written out over every output of a 3-word vocabulary: <eos> after at
  least min_len tokens, no n-gram twice, each token's log-prob times the penalty when
  it is already in the output. The wide beam is exact, greedy is its best first step."""
  model, params, src = make(seed=1, tgt_vocab=6, sharpen=3.0, family=family,
                            **FAMILY_KW[family])
  max_len, k, alpha = 4, 81, 1.0
  options = Options(beam_size=k, length_penalty=alpha, max_len_a=0.0, max_len_b=max_len,
                    min_len=min_len, no_repeat_ngram=no_repeat, repetition_penalty=penalty)
  out = decoding.beam_search(model, params, src, options)
  for b in range(len(src)):
    tgt, _ = _brute_force(model, params, src[b], max_len, alpha, "gnmt")
    per_token, _ = decoding.forced_log_probs(
        model, params, jnp.asarray(np.repeat(src[b][None], len(tgt), 0)), jnp.asarray(tgt))
    scores = []
    for row, lps in zip(tgt, np.asarray(per_token, np.float64)):
      seq = [int(x) for x in row if x != PAD_ID]
      allowed = not (seq[-1] == EOS_ID and len(seq) - 1 < min_len) and not \
          _repeats_an_ngram(seq, no_repeat)
      lp = sum(lps[i] * (penalty if seq[i] in seq[:i] else 1.0) for i in range(len(seq)))
      scores.append(lp / ((5.0 + len(seq)) / 6.0) ** alpha if allowed else -np.inf)
    scores = np.array(scores)
    order = np.argsort(-scores, kind="stable")
    valid = int(np.isfinite(scores).sum())
    np.testing.assert_array_equal(out.tokens[b, 0], tgt[order[0]])
    n = min(10, valid)
    np.testing.assert_allclose(out.scores[b, :n], scores[order[:n]], atol=1e-4)
  greedy = decoding.greedy(model, params, src, Options(
      length_penalty=0.0, max_len_a=0.0, max_len_b=max_len, min_len=min_len,
      no_repeat_ngram=no_repeat, repetition_penalty=penalty))
  for row in np.asarray(greedy.tokens[:, 0]):
    seq = [int(x) for x in row if x != PAD_ID]
    assert not _repeats_an_ngram(seq, no_repeat)
    assert EOS_ID not in seq[:min_len]


def test_narrow_beam_is_no_worse_than_greedy():
  model, params, src = make(seed=2, tgt_vocab=9, sharpen=2.0)
  greedy = decoding.greedy(model, params, src, Options(length_penalty=0.0, **KW))
  beam = decoding.beam_search(model, params, src, Options(beam_size=3, length_penalty=0.0, **KW))
  assert np.all(np.asarray(beam.log_probs[:, 0]) >= np.asarray(greedy.log_probs[:, 0]) - 1e-5)


@pytest.mark.parametrize("family,kw", [("rnn", dict(attention="concat", bidirectional=True)),
                                       ("transformer", {})])
def test_padding_and_batch_neighbours_change_nothing(family, kw):
  model, params, src = make(seed=4, family=family, **kw)
  whole = decoding.beam_search(model, params, src, Options(beam_size=3, **KW))
  padded = np.pad(src, ((0, 0), (0, 3)))
  for b in range(len(src)):
    alone = decoding.beam_search(model, params, src[b:b + 1], Options(beam_size=3, **KW))
    np.testing.assert_array_equal(alone.tokens, whole.tokens[b:b + 1])
    np.testing.assert_allclose(alone.scores, whole.scores[b:b + 1], atol=1e-5)
  # More padding columns: the limit is computed from the real length.
  more = decoding.beam_search(model, params, padded, Options(beam_size=3, **KW))
  length = whole.tokens.shape[-1]
  np.testing.assert_array_equal(more.tokens[..., :length], whole.tokens)
  assert np.all(np.asarray(more.tokens[..., length:]) == PAD_ID)


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_sampling(family):
  model, params, src = make(seed=5, tgt_vocab=7, sharpen=6.0, family=family)
  greedy = decoding.greedy(model, params, src, Options(length_penalty=0.0, **KW))
  cold = decoding.sample(model, params, src, jax.random.PRNGKey(0),
                         Options(length_penalty=0.0, temperature=1e-6, num_samples=3, **KW))
  for n in range(3):
    np.testing.assert_array_equal(cold.tokens[:, n], greedy.tokens[:, 0])
  # The first token's frequencies follow softmax(logits), and top-k keeps the k best.
  one = decoding.sample(model, params, src[:1], jax.random.PRNGKey(1),
                        Options(length_penalty=0.0, temperature=1.0, num_samples=4000,
                                max_len_a=0.0, max_len_b=1))
  first = np.asarray(one.tokens[0, :, 0])
  mem, state = model.apply({"params": params}, jnp.asarray(src[:1]),
                           method=lambda m, s: m.decoder_start(m.encode(s)))
  _, logits, _ = model.apply({"params": params}, mem, state, jnp.array([SOS_ID]),
                             method=lambda m, *a: m.decode_step(*a))
  logits = np.asarray(logits[0], np.float64)
  full_log_probs = logits - np.log(np.sum(np.exp(logits)))  # the model's own, as forced scores
  logits[[PAD_ID, SOS_ID]] = -np.inf  # never sampled
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  freq = np.bincount(first, minlength=len(probs)) / len(first)
  np.testing.assert_allclose(freq, probs, atol=4 * np.sqrt(0.25 / len(first)))
  np.testing.assert_allclose(one.log_probs[0], full_log_probs[first], atol=1e-5)
  top2 = decoding.sample(model, params, src[:1], jax.random.PRNGKey(2),
                         Options(length_penalty=0.0, temperature=1.0, num_samples=500, top_k=2,
                                 max_len_a=0.0, max_len_b=1))
  assert set(np.asarray(top2.tokens[0, :, 0]).tolist()) <= set(np.argsort(-probs)[:2].tolist())
  # top-p: the smallest set of most probable tokens reaching p, renormalised
  order = np.argsort(-probs)
  p = min(0.9, probs[order[0]] + 0.5 * probs[order[1]])  # cuts inside the second token
  nucleus = np.zeros_like(probs)
  nucleus[order[:2]] = probs[order[:2]]
  nucleus /= nucleus.sum()
  top_p = decoding.sample(model, params, src[:1], jax.random.PRNGKey(3),
                          Options(length_penalty=0.0, temperature=1.0, num_samples=4000,
                                  top_p=p, max_len_a=0.0, max_len_b=1))
  first = np.asarray(top_p.tokens[0, :, 0])
  np.testing.assert_allclose(np.bincount(first, minlength=len(probs)) / len(first), nucleus,
                             atol=4 * np.sqrt(0.25 / len(first)))


def test_max_length_follows_the_source_length():
  model, params, src = make(seed=6)
  params["decoder"]["out_b"] = params["decoder"]["out_b"].at[EOS_ID].set(-1e4)  # never ends
  for a, b in ((0.0, 3), (1.0, 2), (0.5, 1)):
    out = decoding.beam_search(model, params, src, Options(beam_size=2, max_len_a=a, max_len_b=b))
    src_len = (src != PAD_ID).sum(1)
    np.testing.assert_array_equal(out.lengths, np.floor(a * src_len + b)[:, None].repeat(2, 1))
    assert out.tokens.shape[-1] == max(1, int(np.floor(a * src.shape[1] + b)))


def test_length_penalty_formulas():
  lengths = np.array([1.0, 4.0, 17.0])
  np.testing.assert_allclose(decoding.length_penalty(lengths, 0.6, "gnmt"),
                             ((5 + lengths) / 6) ** 0.6, rtol=1e-6)
  np.testing.assert_allclose(decoding.length_penalty(lengths, 1.0, "average"), lengths)
  np.testing.assert_allclose(decoding.length_penalty(lengths, 0.0, "gnmt"), 1.0)


def test_top_k_matches_lax_top_k():
  x = jax.random.normal(jax.random.PRNGKey(0), (7, 8000))
  for k in (1, 5, 40):
    values, idx = decoding.top_k(x, k)
    ref_values, ref_idx = jax.lax.top_k(x, k)
    np.testing.assert_array_equal(values, ref_values)
    np.testing.assert_array_equal(idx, ref_idx)
  ties = jnp.array([[1.0, 3.0, 3.0, 0.0] * 8 + [3.0] * 32])
  assert int(decoding.top_k(ties, 1)[1][0, 0]) == 1


def test_bad_arguments_name_the_field():
  model, params, src = make()
  with pytest.raises(ValueError, match="beam_size"):
    decoding.beam_search(model, params, src, Options(beam_size=0))
  with pytest.raises(ValueError, match="length_penalty must be a finite number >= 0"):
    decoding.beam_search(model, params, src, Options(length_penalty=-1.0))
  with pytest.raises(ValueError, match="length_penalty_type='wu' is not valid"):
    decoding.greedy(model, params, src, Options(length_penalty=0.0, length_penalty_type="wu"))
  with pytest.raises(ValueError, match="temperature"):
    decoding.sample(model, params, src, jax.random.PRNGKey(0),
                    Options(length_penalty=0.0, temperature=0.0))
  with pytest.raises(ValueError, match="max_len_a must be a finite number"):
    Options(max_len_a=float("inf"))
  with pytest.raises(ValueError, match="needs an rng key"):
    decoding.decode(model, params, src, Options(temperature=1.0))
  with pytest.raises(ValueError, match="top_k"):
    decoding.sample(model, params, src, jax.random.PRNGKey(0),
                    Options(length_penalty=0.0, temperature=1.0, top_k=-1))
