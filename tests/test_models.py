"""The encoder-decoder: padding, the two decoding paths, gradients, bad arguments."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax import cells, models
from seq2seq_jax.models.rnn import RNNConfig, RNNSeq2Seq
from seq2seq_jax.models.rnn import attention as attn
from seq2seq_jax.models.rnn.encoder import reverse_within_length
from seq2seq_jax.tokens import EOS_ID, PAD_ID, SOS_ID
from seq2seq_jax.training import losses

VOCAB = 13


def make_model(**kw):
  defaults = dict(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB + 2, embed_dim=6,
                  hidden_dim=8, attention_dim=5)
  return RNNSeq2Seq(RNNConfig(**{**defaults, **kw}))


def random_batch(seed, batch=4, src_len=7, tgt_len=6, min_len=2):
  """Padded random sentences, each target ending in EOS."""
  rng = np.random.default_rng(seed)
  src = np.zeros((batch, src_len), np.int32)
  tgt = np.zeros((batch, tgt_len), np.int32)
  for b in range(batch):
    n = rng.integers(min(min_len, src_len), src_len + 1) if b else src_len
    src[b, :n] = rng.integers(4, VOCAB, n)
    m = rng.integers(min_len, tgt_len + 1) if b else tgt_len
    tgt[b, :m - 1] = rng.integers(4, VOCAB, m - 1)
    tgt[b, m - 1] = EOS_ID
  return jnp.asarray(src), jnp.asarray(tgt)


def init(model, src, tgt):
  return model.init(jax.random.PRNGKey(0), src, tgt)


def test_reverse_within_length():
  tokens = np.array([[5, 6, 7, 0, 0], [4, 5, 6, 7, 8]])
  out = reverse_within_length(jnp.asarray(tokens), jnp.array([3, 5]))
  np.testing.assert_array_equal(out, [[7, 6, 5, 0, 0], [8, 7, 6, 5, 4]])


AXES = list(itertools.product(["lstm", "gru"], ["none", "general", "additive"],
                              [False, True], [False, True]))


@pytest.mark.parametrize("cell,attention,bidirectional,feeding", AXES)
def test_padding_changes_nothing(cell, attention, bidirectional, feeding):
  """Extra padding columns leave the logits of real tokens and the loss alone."""
  model = make_model(cell=cell, attention=attention, bidirectional=bidirectional,
                     input_feeding=feeding, reverse_source=bidirectional, num_layers=2)
  src, tgt = random_batch(0)
  variables = init(model, src, tgt)
  src_pad = jnp.pad(src, ((0, 0), (0, 4)), constant_values=PAD_ID)
  tgt_pad = jnp.pad(tgt, ((0, 0), (0, 3)), constant_values=PAD_ID)
  out = model.apply(variables, src, tgt)
  out_pad = model.apply(variables, src_pad, tgt_pad)
  mask = np.asarray(tgt != PAD_ID)
  np.testing.assert_allclose(np.asarray(out.logits)[mask],
                             np.asarray(out_pad.logits)[:, :tgt.shape[1]][mask], atol=1e-5)
  loss = losses.masked_cross_entropy(out.logits, tgt)
  loss_pad = losses.masked_cross_entropy(out_pad.logits, tgt_pad)
  np.testing.assert_allclose(loss["loss_sum"], loss_pad["loss_sum"], rtol=1e-5)
  assert loss["num_tokens"] == loss_pad["num_tokens"] == mask.sum()
  if attention != "none":
    weights = np.asarray(out_pad.attention)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    src_mask = np.asarray(src_pad != PAD_ID)
    assert np.all(weights[np.broadcast_to(~src_mask[:, None, :], weights.shape)] == 0.0)


PATH_AXES = list(itertools.product(["lstm", "rnn"], attn.ATTENTION_TYPES, [False, True]))


@pytest.mark.parametrize("cell,attention,feeding", PATH_AXES)
def test_teacher_forcing_one_per_step_equals_fast_path(cell, attention, feeding):
  model = make_model(cell=cell, attention=attention, input_feeding=feeding, num_layers=2,
                     context_every_step=attention == "none", decoder_init="learned")
  src, tgt = random_batch(1)
  variables = init(model, src, tgt)

  def loss(params, **kw):
    out = model.apply({"params": params}, src, tgt, **kw)
    return losses.masked_cross_entropy(out.logits, tgt)["loss_sum"], out

  # Jitted: op by op, the scans' gradients took 5 to 30 s a case.
  grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnames="per_step")
  (l_fast, fast), g_fast = grad(variables["params"])
  (l_step, step), g_step = grad(variables["params"], tf_prob=1.0, rng=jax.random.PRNGKey(3),
                                per_step=True)
  np.testing.assert_allclose(fast.logits, step.logits, atol=1e-5)
  np.testing.assert_allclose(l_fast, l_step, rtol=1e-6)
  assert float(step.gold_fraction) == 1.0
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_step)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  if attention != "none":
    np.testing.assert_allclose(fast.attention, step.attention, atol=1e-6)


@pytest.mark.parametrize("cell,attention,feeding",
                         [("lstm", "dot", True), ("gru", "additive", False),
                          ("ln_lstm", "concat", True), ("rnn", "none", False)])
def test_teacher_forcing_zero_equals_greedy_decoding(cell, attention, feeding):
  """p = 0 feeds back argmax predictions: a plain Python greedy loop must agree."""
  model = make_model(cell=cell, attention=attention, input_feeding=feeding,
                     bidirectional=True)
  src, tgt = random_batch(2)
  variables = init(model, src, tgt)
  out = model.apply(variables, src, tgt, tf_prob=0.0, rng=jax.random.PRNGKey(0))
  assert float(out.gold_fraction) == 0.0

  def start(module, src):
    return module.decoder_start(module.encode(src))

  mem, state = model.apply(variables, src, method=start)
  tokens = np.full((src.shape[0],), SOS_ID, np.int32)
  for t in range(tgt.shape[1]):
    state, logits, weights = model.apply(variables, mem, state, jnp.asarray(tokens),
                                         method="decode_step")
    np.testing.assert_allclose(out.logits[:, t], logits, atol=1e-5)
    tokens = np.argmax(np.asarray(logits), axis=-1).astype(np.int32)


def test_scheduled_sampling_mixes_gold_and_predictions():
  model = make_model()
  src, tgt = random_batch(3, batch=64, src_len=5, tgt_len=30, min_len=30)
  variables = init(model, src, tgt)
  out = model.apply(variables, src, tgt, tf_prob=0.3, rng=jax.random.PRNGKey(0))
  assert 0.25 < float(out.gold_fraction) < 0.35
  # A different rng draws other coins.
  out2 = model.apply(variables, src, tgt, tf_prob=0.3, rng=jax.random.PRNGKey(1))
  assert not np.allclose(out.logits, out2.logits)


@pytest.mark.parametrize("attention,bidirectional", [("concat", True), ("additive", False)])
def test_model_gradient_matches_finite_differences(attention, bidirectional):
  with jax.enable_x64(True):
    model = make_model(attention=attention, bidirectional=bidirectional, input_feeding=True,
                       num_layers=2, dtype="float64", decoder_init="learned")
    src, tgt = random_batch(4)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                          init(model, src, tgt)["params"])

    @jax.jit
    def loss(params):
      logits = model.apply({"params": params}, src, tgt).logits
      return losses.masked_cross_entropy(logits, tgt, label_smoothing=0.1)["loss_sum"]

    grads = jax.grad(loss)(params)
    flat, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(0)
    for index, path in enumerate(jax.tree_util.tree_flatten_with_path(params)[0]):
      direction = [jnp.zeros_like(a) for a in flat]
      direction[index] = jnp.asarray(rng.standard_normal(flat[index].shape))
      eps = 1e-5
      plus = jax.tree.unflatten(treedef, [a + eps * d for a, d in zip(flat, direction)])
      minus = jax.tree.unflatten(treedef, [a - eps * d for a, d in zip(flat, direction)])
      numeric = (loss(plus) - loss(minus)) / (2 * eps)
      analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grads), direction))
      np.testing.assert_allclose(analytic, numeric, rtol=2e-5, atol=1e-8,
                                 err_msg=jax.tree_util.keystr(path[0]))


@pytest.mark.parametrize("kw,message", [
    (dict(cell="lstmm"), r"model.cell='lstmm' is not valid; valid cells: rnn, lstm, gru, ln_lstm"),
    (dict(attention="luong"), r"model.attention='luong' is not valid; valid choices: none, dot"),
    (dict(hidden_dim=0), r"model.hidden_dim must be a positive int, got 0"),
    (dict(embed_dim=-2), r"model.embed_dim must be a positive int, got -2"),
    (dict(num_layers=1.5), r"model.num_layers must be a positive int, got 1.5"),
    (dict(decoder_init="first"), r"model.decoder_init='first' is not valid; valid choices: last"),
    (dict(dtype="float16"), r"model.dtype='float16' is not valid; valid choices: float32, bf"),
    (dict(dropout=1.0), r"model.dropout must be in \[0, 1\), got 1.0"),
    (dict(bidirectional=True, hidden_dim=7), r"model.hidden_dim must be even"),
])
def test_bad_arguments(kw, message):
  with pytest.raises(ValueError, match=message):
    make_model(**kw)


def test_mismatched_shapes():
  model = make_model()
  src, tgt = random_batch(0)
  variables = init(model, src, tgt)
  with pytest.raises(ValueError,
                     match=r"src and tgt batch sizes differ: src \(4, 7\), tgt \(3, 6\)"):
    model.apply(variables, src, tgt[:3])
  with pytest.raises(ValueError, match=r"src must be int token ids \[batch, length\], got "
                                       r"float32 \(4, 7\)"):
    model.apply(variables, src.astype(jnp.float32), tgt)
  with pytest.raises(ValueError, match=r"tgt must be int token ids .* \(6,\)"):
    model.apply(variables, src, tgt[0])


def test_cells_registry_is_the_models_choice():
  assert set(cells.CELLS) == {"rnn", "lstm", "gru", "ln_lstm"}


def test_build_picks_the_family_and_names_bad_fields():
  model = models.build({"family": "rnn", "cell": "gru", "hidden_dim": 6}, 11, 7)
  assert isinstance(model, RNNSeq2Seq)
  assert (model.config.cell, model.config.hidden_dim, model.config.src_vocab_size,
          model.config.tgt_vocab_size) == ("gru", 6, 11, 7)
  assert models.build({"cell": "gru"}, 11, 7).config.cell == "gru"  # saved before families
  with pytest.raises(ValueError, match="model.family='transformerr' is not valid; valid "
                     "families: rnn"):
    models.build({"family": "transformerr"}, 11, 7)
  with pytest.raises(ValueError, match="cel"):
    models.build({"family": "rnn", "cel": "gru"}, 11, 7)


@pytest.mark.parametrize("score", ["dot", "additive"])
def test_a_new_attention_score_is_one_registry_entry(score, monkeypatch):
  """A copy of a score under a new name trains and decodes exactly as the
  original: nothing outside the registry asks for a score by its name."""
  monkeypatch.setitem(attn.SCORES, "copy", attn.SCORES[score])
  src, tgt = random_batch(0)
  outputs = []
  for name in (score, "copy"):
    model = make_model(attention=name, input_feeding=False)
    params = init(model, src, tgt)
    out = model.apply(params, src, tgt)
    mem, state = model.apply(params, src, method=lambda m, s: m.decoder_start(m.encode(s)))
    _, logits, weights = model.apply(params, mem, state, tgt[:, 0], method="decode_step")
    outputs.append((jax.tree.map(np.asarray, params), np.asarray(out.logits),
                    np.asarray(out.attention), np.asarray(logits), np.asarray(weights)))
  jax.tree.map(np.testing.assert_array_equal, outputs[0], outputs[1])
