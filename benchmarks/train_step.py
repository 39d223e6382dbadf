"""One training step at the reference size: seq2seq_jax against PyTorch and Flax.

    python benchmarks/train_step.py [--steps 8] [--rows none,dot,feed,sampled,transformer]
        [--bf16]

Reference size: 1-layer LSTM encoder and decoder, batch 64, source and target
length 30, vocabularies of 8000, embedding 256, hidden 512, Adam, global-norm
clipping 5. Rows: `none` (no attention), `dot` (Luong dot attention), `feed`
(dot attention with input feeding), `sampled` (dot attention, scheduled
sampling at teacher-forcing probability 0.5: per token the gold token or the
argmax prediction, so the output projection sits inside the time loop). The
implementations run the same architecture in this one process, measured
round-robin (one step of each in turn) so that load on a shared machine hits
them alike; the table gives medians. Still, when other jobs keep the cores
busy, PyTorch's two OpenMP threads (a barrier after every operator) lose far
more than XLA does: compare on an otherwise idle machine.

Transformer rows (the same batch, lengths and vocabularies; post-norm, ReLU,
layer norm eps 1e-5, dropout 0, plain teacher forcing): `transformer` (the
`small` preset: d_model 256, 4 heads, feed-forward 1024, 3+3 layers) and, not
among the default rows, `transformer_base` (the paper's base: 512, 8, 2048,
6+6).

* seq2seq_jax: `models.build` + `training.step.make_train_step`, jitted with donation
  as the training loop does.
* PyTorch (`torch.set_num_threads(2)`): `nn.LSTM` for the encoder; the decoder
  is `nn.LSTM` over the whole target where nothing feeds back, else an
  `nn.LSTMCell` loop over time (as OpenNMT-py and JoeyNMT do); dot attention
  batched with `bmm` where it can be. `--bf16` adds rows under `torch.autocast`.
  For the Transformer rows: `nn.Transformer(batch_first=True)` of the same
  architecture (its final norms removed, as post-norm has none), embeddings
  times sqrt(d) plus the same sinusoidal positions, source padding masks and
  the causal mask, an output `nn.Linear`, the same loss, Adam and
  `clip_grad_norm_`.
* Flax: `nn.RNN(nn.OptimizedLSTMCell)` encoder and decoder, dot attention
  batched after the decoder; input feeding as `nn.scan` over a step module
  (no `sampled` row, and no Transformer rows: '-').

GFLOP/s counts the matmuls of the forward pass times 3 (forward + backward).
"""

import argparse
import functools
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from seq2seq_jax import models
from seq2seq_jax.models.transformer.layers import sinusoidal_positions
from seq2seq_jax.tokens import PAD_ID
from seq2seq_jax.training import optim
from seq2seq_jax.training import step as train_step

B, S, T, V, E, H = 64, 30, 30, 8000, 256, 512
# row: (attention, input feeding, teacher-forcing probability)
ROWS = {"none": ("none", False, 1.0), "dot": ("dot", False, 1.0), "feed": ("dot", True, 1.0),
        "sampled": ("dot", False, 0.5)}
# row: Transformer hyperparameters (config.model fields)
TRANSFORMER_ROWS = {
    "transformer": dict(d_model=256, num_heads=4, ff_dim=1024, encoder_layers=3,
                        decoder_layers=3),
    "transformer_base": dict(d_model=512, num_heads=8, ff_dim=2048, encoder_layers=6,
                             decoder_layers=6),
}
DEFAULT_ROWS = "none,dot,feed,sampled,transformer"


def step_gflops(attention: str, feeding: bool) -> float:
  """Matmul FLOPs of one training step (forward x 3), in GFLOP."""
  enc = 2 * B * S * (E * 4 * H + H * 4 * H)
  dec = 2 * B * T * ((E + (H if feeding else 0)) * 4 * H + H * 4 * H)
  att = 0 if attention == "none" else 2 * B * T * (2 * S * H + 2 * H * H)
  out = 2 * B * T * H * V
  return 3 * (enc + dec + att + out) / 1e9


def transformer_gflops(d_model, ff_dim, encoder_layers, decoder_layers, **_) -> float:
  """Matmul FLOPs of one Transformer training step (forward x 3), in GFLOP."""
  d, f = d_model, ff_dim
  enc = 2 * B * S * (4 * d * d + 2 * d * f) + 2 * 2 * B * S * S * d
  dec = (2 * B * T * (4 * d * d + 2 * d * d + 2 * d * f) + 2 * B * S * 2 * d * d
         + 2 * 2 * B * T * T * d + 2 * 2 * B * T * S * d)
  out = 2 * B * T * d * V
  return 3 * (encoder_layers * enc + decoder_layers * dec + out) / 1e9


def random_batch(seed: int = 0):
  rng = np.random.default_rng(seed)
  src = rng.integers(4, V, (B, S)).astype(np.int32)
  tgt = rng.integers(4, V, (B, T)).astype(np.int32)
  tgt[:, -1] = 2  # EOS
  return src, tgt


# ----- seq2seq_jax -----

def ours_step(attention, feeding, tf_prob, dtype):
  model = models.build(dict(cell="lstm", attention=attention, input_feeding=feeding,
                            embed_dim=E, hidden_dim=H, dtype=dtype), V, V)
  return _ours_runner(model, None if tf_prob == 1.0 else lambda i: tf_prob)


def ours_transformer_step(cfg: dict, dtype):
  model = models.build(dict(family="transformer", dropout=0.0, dtype=dtype, **cfg), V, V)
  return _ours_runner(model, None)


def _ours_runner(model, schedule):
  """One jitted, donated `make_train_step` step (Adam, clip 5), as the training loop runs it."""
  src, tgt = random_batch()
  batch = {"src": jnp.asarray(src), "tgt": jnp.asarray(tgt)}
  tx = optim.make_optimizer(learning_rate=1e-3, clip_norm=5.0)
  state = train_step.init_state(model, tx, jax.random.PRNGKey(0), batch)
  step = jax.jit(train_step.make_train_step(model, tx, schedule), donate_argnums=(0,))
  holder = {"state": state}
  rng = jax.random.PRNGKey(1)

  def run():
    holder["state"], metrics = step(holder["state"], batch, rng)
    return float(metrics["loss"])
  return run


# ----- PyTorch -----

class TorchSeq2Seq(torch.nn.Module):
  def __init__(self, attention, feeding, tf_prob):
    super().__init__()
    self.attention, self.feeding, self.tf_prob = attention, feeding, tf_prob
    loop = feeding or tf_prob < 1.0
    self.src_embed = torch.nn.Embedding(V, E)
    self.tgt_embed = torch.nn.Embedding(V, E)
    self.encoder = torch.nn.LSTM(E, H, batch_first=True)
    if loop:
      self.decoder_cell = torch.nn.LSTMCell(E + (H if feeding else 0), H)
    else:
      self.decoder = torch.nn.LSTM(E, H, batch_first=True)
    if attention != "none":
      self.w_c = torch.nn.Linear(2 * H, H, bias=False)
    self.out = torch.nn.Linear(H, V)

  def attend(self, h, memory):  # h [B, t, H], memory [B, S, H]
    weights = torch.softmax(torch.bmm(h, memory.transpose(1, 2)), dim=-1)
    context = torch.bmm(weights, memory)
    return torch.tanh(self.w_c(torch.cat([context, h], -1)))

  def forward(self, src, tgt_in, tgt):
    memory, (h, _) = self.encoder(self.src_embed(src))
    c = h  # decoder_init="last": the encoder's final h starts the cell state too
    emb = self.tgt_embed(tgt_in)
    if self.tf_prob < 1.0:  # scheduled sampling: a coin per token
      h, c = h[0], c[0]
      use_gold = torch.rand(B, T) < self.tf_prob
      tokens, all_logits = tgt_in[:, 0], []
      for t in range(T):
        if t:
          tokens = torch.where(use_gold[:, t], tgt_in[:, t], all_logits[-1].argmax(-1))
        h, c = self.decoder_cell(self.tgt_embed(tokens), (h, c))
        all_logits.append(self.out(self.attend(h[:, None], memory)[:, 0]))
      logits = torch.stack(all_logits, 1)
      return torch.nn.functional.cross_entropy(logits.reshape(-1, V).float(), tgt.reshape(-1))
    if self.feeding:
      h, c = h[0], c[0]
      feed = torch.zeros(B, H)
      outs = []
      for t in range(T):
        h, c = self.decoder_cell(torch.cat([emb[:, t], feed], -1), (h, c))
        feed = self.attend(h[:, None], memory)[:, 0]
        outs.append(feed)
      outs = torch.stack(outs, 1)
    else:
      outs, _ = self.decoder(emb, (h, c))
      if self.attention != "none":
        outs = self.attend(outs, memory)
    logits = self.out(outs)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V).float(), tgt.reshape(-1))


def torch_step(attention, feeding, tf_prob, autocast):
  torch.manual_seed(0)
  return _torch_runner(TorchSeq2Seq(attention, feeding, tf_prob), autocast)


def _torch_runner(model, autocast):
  """One Adam step with clipping of `model(src, tgt_in, tgt)`'s loss, as a callable."""
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  src, tgt = random_batch()
  src, tgt = torch.from_numpy(src).long(), torch.from_numpy(tgt).long()
  tgt_in = torch.cat([torch.ones(B, 1, dtype=torch.long), tgt[:, :-1]], 1)

  def run():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
      loss = model(src, tgt_in, tgt)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    return float(loss.detach())
  return run


class TorchTransformer(torch.nn.Module):
  """seq2seq_jax's `transformer` family (post-norm, sinusoidal positions) in PyTorch."""

  def __init__(self, d_model, num_heads, ff_dim, encoder_layers, decoder_layers):
    super().__init__()
    self.scale = d_model ** 0.5
    self.src_embed = torch.nn.Embedding(V, d_model)
    self.tgt_embed = torch.nn.Embedding(V, d_model)
    self.net = torch.nn.Transformer(d_model, num_heads, encoder_layers, decoder_layers, ff_dim,
                                    dropout=0.0, batch_first=True)
    self.net.encoder.norm = None  # post-norm: no final norm
    self.net.decoder.norm = None
    self.out = torch.nn.Linear(d_model, V)
    positions = np.array(sinusoidal_positions(jnp.arange(max(S, T)), d_model))
    self.register_buffer("positions", torch.from_numpy(positions))
    self.register_buffer("causal", torch.nn.Transformer.generate_square_subsequent_mask(T))

  def forward(self, src, tgt_in, tgt):
    pad = src == PAD_ID
    x = self.src_embed(src) * self.scale + self.positions[:src.shape[1]]
    memory = self.net.encoder(x, src_key_padding_mask=pad)
    y = self.tgt_embed(tgt_in) * self.scale + self.positions[:tgt_in.shape[1]]
    y = self.net.decoder(y, memory, tgt_mask=self.causal, tgt_is_causal=True,
                         memory_key_padding_mask=pad)
    logits = self.out(y)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V).float(), tgt.reshape(-1))


def torch_transformer_step(cfg: dict, autocast):
  torch.manual_seed(0)
  return _torch_runner(TorchTransformer(**cfg).train(), autocast)


# ----- Flax nn.RNN(nn.OptimizedLSTMCell) -----

class FlaxFeedStep(nn.Module):
  @nn.compact
  def __call__(self, carry, emb_t, memory):
    lstm_carry, feed = carry
    lstm_carry, h = nn.OptimizedLSTMCell(H)(lstm_carry, jnp.concatenate([emb_t, feed], -1))
    weights = jax.nn.softmax(jnp.einsum("bh,bsh->bs", h, memory), -1)
    context = jnp.einsum("bs,bsh->bh", weights, memory)
    out = jnp.tanh(nn.Dense(H, use_bias=False)(jnp.concatenate([context, h], -1)))
    return (lstm_carry, out), out


class FlaxSeq2Seq(nn.Module):
  attention: str
  feeding: bool

  @nn.compact
  def __call__(self, src, tgt_in):
    carry, memory = nn.RNN(nn.OptimizedLSTMCell(H), return_carry=True)(nn.Embed(V, E)(src))
    emb = nn.Embed(V, E)(tgt_in)
    if self.feeding:
      scan = nn.scan(FlaxFeedStep, variable_broadcast="params", split_rngs={"params": False},
                     in_axes=(1, nn.broadcast), out_axes=1)
      _, outs = scan()((carry, jnp.zeros((B, H))), emb, memory)
    else:
      outs = nn.RNN(nn.OptimizedLSTMCell(H))(emb, initial_carry=carry)
      if self.attention != "none":
        weights = jax.nn.softmax(jnp.einsum("bth,bsh->bts", outs, memory), -1)
        context = jnp.einsum("bts,bsh->bth", weights, memory)
        outs = jnp.tanh(nn.Dense(H, use_bias=False)(jnp.concatenate([context, outs], -1)))
    return nn.Dense(V)(outs)


def flax_step(attention, feeding):
  model = FlaxSeq2Seq(attention, feeding)
  src, tgt = random_batch()
  src, tgt = jnp.asarray(src), jnp.asarray(tgt)
  tgt_in = jnp.concatenate([jnp.ones((B, 1), jnp.int32), tgt[:, :-1]], 1)
  params = model.init(jax.random.PRNGKey(0), src, tgt_in)
  tx = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(1e-3))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state):
    def loss_fn(params):
      logits = model.apply(params, src, tgt_in)
      return optax.softmax_cross_entropy_with_integer_labels(logits, tgt).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  holder = {"p": params, "o": tx.init(params)}

  def run():
    holder["p"], holder["o"], loss = step(holder["p"], holder["o"])
    return float(loss)
  return run


_matmul = jax.jit(jnp.matmul)


def best_matmul_time(m: int, k: int, n: int) -> float:
  """Seconds of one f32 `[m, k] x [k, n]` matmul, the better of XLA and PyTorch."""
  a, b = np.ones((m, k), np.float32), np.ones((k, n), np.float32)
  ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
  out = []
  for f in (lambda: _matmul(ja, jb).block_until_ready(), lambda: ta @ tb):
    f()
    out.append(min(_timed(f) for _ in range(5)))
  return min(out)


def gemm_floor(attention: str) -> tuple[float, float]:
  """Seconds a step's f32 matmuls take alone, each at its best measured speed.

  Every matmul of the forward and backward pass of the `none` / `dot` rows is
  timed alone with jnp and with torch (2 threads); the sum of the faster of the
  two is a floor under any implementation of the step on this machine that
  does the same arithmetic. Returns (floor, share of it in the vocabulary
  projection).
  """
  def fwd_bwd(m, k, n, count=1):
    # y = x @ w: forward [m,k]x[k,n]; backward dx = dy w^T, dw = x^T dy.
    return [(m, k, n, count), (m, n, k, count), (k, m, n, count)]
  rec = [(B, H, 4 * H, S + T), (B, 4 * H, H, S + T), (H, B * (S + T), 4 * H, 1)]
  shapes = (fwd_bwd(B * S, E, 4 * H) + fwd_bwd(B * T, E, 4 * H) + rec)
  if attention != "none":
    shapes += fwd_bwd(B * T, 2 * H, H)  # W_c; the [30 x 30] score bmm's are small
  vocab = fwd_bwd(B * T, H, V)
  best = best_matmul_time
  vocab_time = sum(c * best(m, k, n) for m, k, n, c in vocab)
  return vocab_time + sum(c * best(m, k, n) for m, k, n, c in shapes), vocab_time


def _timed(f):
  start = time.perf_counter()
  f()
  return time.perf_counter() - start


def measure(runners: dict, steps: int) -> dict:
  """Median seconds per step, one step of each runner in turn."""
  for run in runners.values():  # compile and warm up
    run()
    run()
  times = {name: [] for name in runners}
  for _ in range(steps):
    for name, run in runners.items():
      times[name].append(_timed(run))
  return {name: float(np.median(t)) for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=8)
  parser.add_argument("--rows", default=DEFAULT_ROWS,
                      help=f"of {', '.join([*ROWS, *TRANSFORMER_ROWS])}")
  parser.add_argument("--bf16", action="store_true", help="also bf16 rows")
  parser.add_argument("--no_flax", action="store_true")
  parser.add_argument("--floor", action="store_true",
                      help="also the f32 matmul-only floor of the none and dot rows")
  args = parser.parse_args()
  torch.set_num_threads(2)
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"(2 threads), {os.cpu_count()} cpus; batch {B}, length {S}/{T}, vocab {V}, "
        f"emb {E}, hidden {H}; median of {args.steps} steps")
  header = (f"| {'row':<16} | {'implementation':<24} | {'s/step':>7} | {'tokens/s':>8} | "
            f"{'vs torch':>8} | {'GFLOP/s':>7} |")
  print(header)
  print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
  for row in args.rows.split(","):
    if row in TRANSFORMER_ROWS:
      cfg = TRANSFORMER_ROWS[row]
      runners = {"seq2seq_jax f32": ours_transformer_step(cfg, "float32"),
                 "pytorch f32": torch_transformer_step(cfg, False)}
      if args.bf16:
        runners["seq2seq_jax bf16"] = ours_transformer_step(cfg, "bfloat16")
        runners["pytorch bf16 autocast"] = torch_transformer_step(cfg, True)
      flops = transformer_gflops(**cfg)
    else:
      attention, feeding, tf_prob = ROWS[row]
      runners = {"seq2seq_jax f32": ours_step(attention, feeding, tf_prob, "float32"),
                 "pytorch f32": torch_step(attention, feeding, tf_prob, False)}
      if not args.no_flax and tf_prob == 1.0:
        runners["flax nn.RNN f32"] = flax_step(attention, feeding)
      if args.bf16:
        runners["seq2seq_jax bf16"] = ours_step(attention, feeding, tf_prob, "bfloat16")
        runners["pytorch bf16 autocast"] = torch_step(attention, feeding, tf_prob, True)
      flops = step_gflops(attention, feeding)
    secs = measure(runners, args.steps)
    for name, sec in secs.items():
      ref = secs["pytorch bf16 autocast" if "bf16" in name else "pytorch f32"]
      print(f"| {row:<16} | {name:<24} | {sec:7.3f} | {B * T / sec:8.0f} | "
            f"{ref / sec:7.2f}x | {flops / sec:7.1f} |", flush=True)
    if row in TRANSFORMER_ROWS and not args.no_flax:
      print(f"| {row:<16} | {'flax nn.RNN f32':<24} | {'-':>7} | {'-':>8} | {'-':>8} | "
            f"{'-':>7} |", flush=True)
    if args.floor and row in ("none", "dot"):
      floor, vocab = gemm_floor(attention)
      print(f"| {row:<16} | {'f32 matmul floor':<24} | {floor:7.3f} | {B * T / floor:8.0f} | "
            f"{secs['pytorch f32'] / floor:7.2f}x | {flops / floor:7.1f} |  "
            f"(vocabulary projection {vocab:.3f} s)", flush=True)


if __name__ == "__main__":
  main()
