"""The Transformer family against independent references: PyTorch's nn.Transformer
with copied weights, attention written out in numpy, causality, padding, the cache."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import default
from seq2seq_jax import config_checks, data, models
from seq2seq_jax.models.transformer import TransformerConfig, TransformerSeq2Seq
from seq2seq_jax.tokens import EOS_ID, PAD_ID, SOS_ID
from seq2seq_jax.training import step

SRC_VOCAB, TGT_VOCAB = 13, 11
D, HEADS, FF = 16, 4, 24


def make_model(**kw):
  fields = dict(src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB, d_model=D, num_heads=HEADS,
                ff_dim=FF, encoder_layers=2, decoder_layers=2, dropout=0.0)
  return TransformerSeq2Seq(TransformerConfig(**{**fields, **kw}))


def random_batch(seed, batch=4, src_len=7, tgt_len=6, src_vocab=SRC_VOCAB, tgt_vocab=TGT_VOCAB):
  """Padded random sentences (row 0 full length), each target ending in EOS."""
  rng = np.random.default_rng(seed)
  src = np.zeros((batch, src_len), np.int32)
  tgt = np.zeros((batch, tgt_len), np.int32)
  for b in range(batch):
    n = src_len if b == 0 else int(rng.integers(2, src_len + 1))
    src[b, :n] = rng.integers(4, src_vocab, n)
    m = tgt_len if b == 0 else int(rng.integers(2, tgt_len + 1))
    tgt[b, :m - 1] = rng.integers(4, tgt_vocab, m - 1)
    tgt[b, m - 1] = EOS_ID
  return src, tgt


def init(model, src, tgt, seed=0):
  return model.init(jax.random.PRNGKey(seed), jnp.asarray(src), jnp.asarray(tgt))["params"]


def numpy_positions(length, d):
  """The paper's formula: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
  pe = np.zeros((length, d))
  for pos in range(length):
    for i in range(0, d, 2):
      pe[pos, i] = math.sin(pos / 10000 ** (i / d))
      pe[pos, i + 1] = math.cos(pos / 10000 ** (i / d))
  return pe


def shifted(tgt):
  return np.concatenate([np.full((len(tgt), 1), SOS_ID), tgt[:, :-1]], 1)


# ----- PyTorch's nn.Transformer with our weights -----

def _t(x):
  return torch.tensor(np.asarray(x, np.float32))


def _copy_attention(torch_mha, p):
  with torch.no_grad():
    torch_mha.in_proj_weight.copy_(torch.cat([_t(p[n]["kernel"]).T
                                              for n in ("query", "key", "value")]))
    torch_mha.in_proj_bias.copy_(torch.cat([_t(p[n]["bias"]) for n in ("query", "key", "value")]))
    torch_mha.out_proj.weight.copy_(_t(p["out"]["kernel"]).T)
    torch_mha.out_proj.bias.copy_(_t(p["out"]["bias"]))


def _copy_linear(linear, p):
  with torch.no_grad():
    linear.weight.copy_(_t(p["kernel"]).T)
    linear.bias.copy_(_t(p["bias"]))


def _copy_norm(norm, p):
  with torch.no_grad():
    norm.weight.copy_(_t(p["scale"]))
    norm.bias.copy_(_t(p["bias"]))


def torch_transformer(params, cfg: TransformerConfig) -> torch.nn.Transformer:
  net = torch.nn.Transformer(cfg.d_model, cfg.num_heads, cfg.encoder_layers, cfg.decoder_layers,
                             cfg.ff_dim, dropout=0.0, batch_first=True,
                             norm_first=cfg.norm == "pre")
  for i, layer in enumerate(net.encoder.layers):
    p = params[f"encoder_{i}"]
    _copy_attention(layer.self_attn, p["self_attn"])
    _copy_linear(layer.linear1, p["ff"]["linear1"])
    _copy_linear(layer.linear2, p["ff"]["linear2"])
    _copy_norm(layer.norm1, p["norm1"])
    _copy_norm(layer.norm2, p["norm2"])
  for i, layer in enumerate(net.decoder.layers):
    p = params[f"decoder_{i}"]
    _copy_attention(layer.self_attn, p["self_attn"])
    _copy_attention(layer.multihead_attn, p["cross_attn"])
    _copy_linear(layer.linear1, p["ff"]["linear1"])
    _copy_linear(layer.linear2, p["ff"]["linear2"])
    for j in (1, 2, 3):
      _copy_norm(getattr(layer, f"norm{j}"), p[f"norm{j}"])
  if cfg.norm == "pre":
    _copy_norm(net.encoder.norm, params["encoder_norm"])
    _copy_norm(net.decoder.norm, params["decoder_norm"])
  else:  # nn.Transformer always adds a final norm; the paper's post-norm stack has none
    net.encoder.norm = None
    net.decoder.norm = None
  return net.train()  # dropout 0; train mode keeps PyTorch off its fused inference path


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_matches_torch_transformer(norm):
  """Encoder output, decoder output and logits equal nn.Transformer's to 1e-5."""
  model = make_model(norm=norm, encoder_layers=2, decoder_layers=3)
  src, tgt = random_batch(0)
  params = init(model, src, tgt)
  src_j, tgt_j = jnp.asarray(src), jnp.asarray(tgt)
  ours_memory = model.apply({"params": params}, src_j, method="encode").memory
  features, _ = model.apply({"params": params}, model.apply({"params": params}, src_j,
                                                            method="encode"),
                            jnp.asarray(shifted(tgt)), method="decode_all")
  logits = model.apply({"params": params}, src_j, tgt_j).logits

  net = torch_transformer(params, model.config)
  scale = math.sqrt(D)
  src_x = np.asarray(params["src_embedding"])[src] * scale + numpy_positions(src.shape[1], D)
  tgt_x = np.asarray(params["tgt_embedding"])[shifted(tgt)] * scale + \
      numpy_positions(tgt.shape[1], D)
  pad = torch.tensor(src == PAD_ID)
  causal = torch.nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
  with torch.no_grad():
    memory = net.encoder(_t(src_x), src_key_padding_mask=pad)
    out = net.decoder(_t(tgt_x), memory, tgt_mask=causal, memory_key_padding_mask=pad)
    torch_logits = out @ _t(params["out_w"]) + _t(params["out_b"])
  real_src, real_tgt = src != PAD_ID, tgt != PAD_ID
  np.testing.assert_allclose(np.asarray(ours_memory)[real_src], memory.numpy()[real_src],
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(features)[real_tgt], out.numpy()[real_tgt], atol=1e-5)
  np.testing.assert_allclose(np.asarray(logits)[real_tgt], torch_logits.numpy()[real_tgt],
                             atol=1e-5)


def _numpy_mha(x_q, x_kv, p, mask, heads):
  """Multi-head attention written out: returns `(out [q, d], weights [h, q, k])`."""
  def proj(x, name):
    return x @ np.asarray(p[name]["kernel"], np.float64) + np.asarray(p[name]["bias"])

  q, k, v = proj(x_q, "query"), proj(x_kv, "key"), proj(x_kv, "value")
  dh = q.shape[-1] // heads
  outs, weights = [], []
  for h in range(heads):
    s = q[:, h * dh:(h + 1) * dh] @ k[:, h * dh:(h + 1) * dh].T / math.sqrt(dh)
    s = np.where(mask, s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    weights.append(w)
    outs.append(w @ v[:, h * dh:(h + 1) * dh])
  return proj(np.concatenate(outs, -1), "out"), np.stack(weights)


def _numpy_layer_norm(x, p):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def test_cross_attention_heads_match_the_formula():
  """Every head's cross-attention weights of a one-layer post-norm decoder,
  written out in numpy over the encoder's output: softmax(q k^T / sqrt(dh))
  with padded source positions masked; padded positions get exactly 0."""
  model = make_model(decoder_layers=1)
  src, tgt = random_batch(1)
  params = init(model, src, tgt, seed=1)
  out = model.apply({"params": params}, jnp.asarray(src), jnp.asarray(tgt))
  memory = np.asarray(model.apply({"params": params}, jnp.asarray(src), method="encode").memory,
                      np.float64)
  p = params["decoder_0"]
  tgt_in = shifted(tgt)
  for b in range(len(src)):
    x = np.asarray(params["tgt_embedding"], np.float64)[tgt_in[b]] * math.sqrt(D) + \
        numpy_positions(tgt.shape[1], D)
    causal = np.tril(np.ones((tgt.shape[1], tgt.shape[1]), bool))
    sa, _ = _numpy_mha(x, x, p["self_attn"], causal, HEADS)
    y = _numpy_layer_norm(x + sa, p["norm1"])
    _, weights = _numpy_mha(y, memory[b], p["cross_attn"], (src[b] != PAD_ID)[None], HEADS)
    np.testing.assert_allclose(np.asarray(out.heads)[b, 0], weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.attention)[b], weights.mean(0), atol=1e-5)
    assert np.all(np.asarray(out.heads)[b, :, :, :, src[b] == PAD_ID] == 0.0)


@pytest.mark.parametrize("kw", [dict(norm="post"), dict(norm="pre", positions="learned"),
                                dict(tie_output=True)], ids=["post", "pre-learned", "tied"])
def test_causality_and_padding(kw):
  """Changing target token t changes no output before t (and does change later
  ones); extra padding on either side changes no real output."""
  model = make_model(**kw)
  src, tgt = random_batch(2)
  params = init(model, src, tgt)
  apply = lambda s, t: np.asarray(model.apply({"params": params}, jnp.asarray(s),
                                              jnp.asarray(t)).logits)
  base = apply(src, tgt)
  for t in range(tgt.shape[1] - 1):
    changed = tgt.copy()
    changed[0, t] = 4 + (tgt[0, t] - 3) % (TGT_VOCAB - 4)
    other = apply(src, changed)
    # Output t predicts token t from the tokens before it.
    np.testing.assert_array_equal(other[0, :t + 1], base[0, :t + 1])
    assert np.abs(other[0, t + 1] - base[0, t + 1]).max() > 1e-4
    np.testing.assert_array_equal(other[1:], base[1:])
  padded = apply(np.pad(src, ((0, 0), (0, 5))), np.pad(tgt, ((0, 0), (0, 3))))
  real = tgt != PAD_ID
  np.testing.assert_allclose(padded[:, :tgt.shape[1]][real], base[real], atol=1e-5)


@pytest.mark.parametrize("kw", [dict(norm="post"), dict(norm="pre", positions="learned"),
                                dict(share_embeddings=True, tie_output=True,
                                     src_vocab_size=TGT_VOCAB)],
                         ids=["post", "pre-learned", "shared-tied"])
def test_cached_step_equals_the_full_forward(kw):
  """Feeding the gold prefix one token at a time through the key/value cache
  gives the teacher-forced logits and attention at every position."""
  model = make_model(**kw)
  src, tgt = random_batch(3, src_vocab=model.config.src_vocab_size)
  params = init(model, src, tgt)
  full = model.apply({"params": params}, jnp.asarray(src), jnp.asarray(tgt))
  mem, state = model.apply({"params": params}, jnp.asarray(src),
                           method=lambda m, s: m.decoder_start(m.encode(s), tgt.shape[1] + 2))
  tgt_in = shifted(tgt)
  for t in range(tgt.shape[1]):
    state, logits, weights = model.apply({"params": params}, mem, state,
                                         jnp.asarray(tgt_in[:, t]), method="decode_step")
    np.testing.assert_allclose(logits, full.logits[:, t], atol=1e-5)
    np.testing.assert_allclose(weights, full.attention[:, t], atol=1e-6)
  assert int(state.position[0]) == tgt.shape[1]


def test_scheduled_sampling_two_passes():
  """tf_prob 1 is teacher forcing; tf_prob 0 reads the first (teacher-forced)
  pass's argmax predictions of every previous token."""
  model = make_model()
  src, tgt = random_batch(4)
  params = init(model, src, tgt)
  variables = {"params": params}
  forced = model.apply(variables, jnp.asarray(src), jnp.asarray(tgt))
  one = model.apply(variables, jnp.asarray(src), jnp.asarray(tgt), tf_prob=1.0,
                    rng=jax.random.PRNGKey(0), per_step=True)  # both passes, all gold
  np.testing.assert_allclose(one.logits, forced.logits, atol=1e-5)
  assert float(one.gold_fraction) == 1.0
  zero = model.apply(variables, jnp.asarray(src), jnp.asarray(tgt), tf_prob=0.0,
                     rng=jax.random.PRNGKey(0))
  predicted = np.asarray(forced.logits).argmax(-1)
  # The target whose shifted form is [<sos>, predicted[0], ..., predicted[-2]].
  own_target = np.concatenate([predicted[:, :-1], tgt[:, -1:]], 1).astype(np.int32)
  expected = model.apply(variables, jnp.asarray(src), jnp.asarray(own_target))
  np.testing.assert_allclose(zero.logits, expected.logits, atol=1e-5)
  assert float(zero.gold_fraction) == 0.0
  half = model.apply(variables, jnp.asarray(src), jnp.asarray(tgt), tf_prob=0.5,
                     rng=jax.random.PRNGKey(1))
  assert 0.1 < float(half.gold_fraction) < 0.9


def test_gold_branch_and_jitted_training_path():
  """A traced tf_prob of 1 takes the one-pass branch (equal to teacher forcing);
  under jit with dropout a tf_prob below 1 trains, with finite gradients."""
  model = make_model(dropout=0.1, attention_dropout=0.1)
  src, tgt = random_batch(5)
  params = init(model, src, tgt)
  batch = {"src": jnp.asarray(src), "tgt": jnp.asarray(tgt)}

  @functools.partial(jax.jit, static_argnames="train")
  def loss(params, tf_prob, train):
    return step.loss_and_metrics(params, model, batch, tf_prob, jax.random.PRNGKey(3), train)[0]

  forced = step.loss_and_metrics(params, model, batch, None, jax.random.PRNGKey(3), False)[0]
  np.testing.assert_allclose(loss(params, 1.0, train=False), forced, rtol=1e-5)
  grads = jax.jit(jax.grad(lambda p, prob: loss(p, prob, train=True)))(params, 0.5)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert float(loss(params, 0.0, train=False)) != pytest.approx(float(forced))


def test_bfloat16_cache_follows_the_forward():
  model = make_model(dtype="bfloat16", norm="pre")
  src, tgt = random_batch(6)
  params = init(model, src, tgt)
  full = model.apply({"params": params}, jnp.asarray(src), jnp.asarray(tgt))
  mem, state = model.apply({"params": params}, jnp.asarray(src),
                           method=lambda m, s: m.decoder_start(m.encode(s), tgt.shape[1]))
  tgt_in = shifted(tgt)
  for t in range(tgt.shape[1]):
    state, logits, _ = model.apply({"params": params}, mem, state, jnp.asarray(tgt_in[:, t]),
                                   method="decode_step")
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, full.logits[:, t], atol=0.05)


def test_learned_positions_past_max_len_are_an_error():
  model = make_model(positions="learned", max_len=6)
  src, tgt = random_batch(7, src_len=6, tgt_len=6)
  params = init(model, src, tgt)
  with pytest.raises(ValueError, match="learned positions cover model.max_len=6"):
    model.apply({"params": params}, jnp.asarray(np.pad(src, ((0, 0), (0, 2)))), jnp.asarray(tgt))
  with pytest.raises(ValueError, match="decoding outputs of 9 tokens"):
    model.apply({"params": params}, jnp.asarray(src),
                method=lambda m, s: m.decoder_start(m.encode(s), 9))


def test_shared_embeddings_need_a_joint_vocabulary():
  config = default.get_config("quick")
  config.dataset.name = "reverse"
  config.model.family = "transformer"
  config.model.share_embeddings = True
  with pytest.raises(ValueError, match="set dataset.joint_vocab=True"):
    config_checks.validate(config)
  config.dataset.joint_vocab = True
  config_checks.validate(config)
  dataset = data.load(config.dataset)
  assert dataset.src_vocab is dataset.tgt_vocab
  model = models.build(config.model, len(dataset.src_vocab), len(dataset.tgt_vocab))
  params = init(model, *dataset.arrays["train"])
  assert "embedding" in params and "src_embedding" not in params
  numbers = default.get_config("quick")
  numbers.dataset.joint_vocab = True
  with pytest.raises(ValueError, match="joint_vocab needs one tokenizer"):
    data.load(numbers.dataset)


def test_config_checks_and_family_fields():
  with pytest.raises(ValueError, match="d_model=30 must be a multiple of model.num_heads=4"):
    make_model(d_model=30)
  with pytest.raises(ValueError, match="model.norm='mid' is not valid"):
    make_model(norm="mid")
  with pytest.raises(ValueError, match="share_embeddings needs one vocabulary"):
    make_model(share_embeddings=True)
  # One config.model may hold both families' fields; each family reads its own.
  both = {"family": "transformer", "d_model": 8, "num_heads": 2, "cell": "gru",
          "hidden_dim": 7}
  assert models.build(both, 5, 6).config.d_model == 8
  assert models.build({**both, "family": "rnn"}, 5, 6).config.cell == "gru"
  with pytest.raises(ValueError, match="d_modl"):
    models.build({"family": "transformer", "d_modl": 8}, 5, 6)
