"""Decoding speed at the reference size: seq2seq_jax.decoding against PyTorch.

    python benchmarks/decode.py [--reps 5] [--rows none,general,transformer] [--beam 5]

Reference size: 1-layer LSTM encoder and decoder, embedding 256, hidden 512,
vocabularies of 8000, batch 64, source length 30, 30 output tokens (the `<eos>`
logit is biased down by 1e4 in both implementations, so that every sentence
runs the full 30 steps). Rows: `none` (no attention) and `general` (Luong
general attention with input feeding, OpenNMT-py's default). Both
implementations hold the same weights (copied from the Flax params) and run the
same algorithm; the table gives sentences/s (medians, one call of each in
turn, so that load on a shared machine hits them alike) and how often the two
produced the same output. As for `train_step.py`, compare on an otherwise
idle machine: under foreign load PyTorch's two OpenMP threads slow down far
more than XLA.

Transformer rows (the same batch, lengths, vocabularies and `<eos>` bias):
`transformer` (the `small` preset: d_model 256, 4 heads, feed-forward 1024,
3+3 layers, post-norm) and, not among the default rows, `transformer_base`
(512, 8, 2048, 6+6); the benchmark fails unless PyTorch's greedy tokens of
the first sentences are exactly ours.

* seq2seq_jax: `decoding.greedy` / `decoding.beam_search`, one compiled
  program each (`lax.while_loop`), attention weights of the output kept.
* PyTorch (`torch.set_num_threads(2)`, `torch.inference_mode`): a Python loop
  over time steps around `nn.LSTMCell`, as OpenNMT-py and JoeyNMT decode.
  Greedy stops when every sentence has produced `<eos>`. Beam search is
  OpenNMT-py's: the top K of the K x V continuations, `index_select` of the
  states, sequences and attention, and a Python loop over the sentences that
  moves finished hypotheses into per-sentence lists and decides when a
  sentence is done (the same rule and length penalty as ours).
  The Transformer is `nn.Transformer`'s encoder (copied weights) and an
  incremental decoder over its decoder layers' weights with a key/value cache,
  as fairseq decodes: per layer the self-attention keys and values of the
  earlier steps (grown with `cat`, reordered with `index_select` in the
  beam), the cross-attention keys and values of the encoder output computed
  once; `F.scaled_dot_product_attention` for self-attention, the
  cross-attention written out (the last layer's weights, averaged over heads,
  are kept, as ours keeps them). Greedy and beam are the same loops as for the
  LSTM.
"""

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

from seq2seq_jax import decoding, models
from seq2seq_jax.models.transformer.layers import sinusoidal_positions
from seq2seq_jax.tokens import EOS_ID, PAD_ID, SOS_ID

sys.path.insert(0, os.path.dirname(__file__))
from train_step import TRANSFORMER_ROWS, best_matmul_time, measure  # noqa: E402  (shared)

B, S, T, V, E, H = 64, 30, 30, 8000, 256, 512
ROWS = {"none": ("none", False), "general": ("general", True)}
DEFAULT_ROWS = "none,general,transformer"
CHECKED = 8  # sentences whose greedy output PyTorch must reproduce exactly
ALPHA = 0.6


def make_model(attention, feeding):
  model = models.build(dict(cell="lstm", attention=attention, input_feeding=feeding,
                            embed_dim=E, hidden_dim=H), V, V)
  rng = np.random.default_rng(0)
  src = rng.integers(4, V, (B, S)).astype(np.int32)
  params = model.init(jax.random.PRNGKey(0), jnp.asarray(src), jnp.asarray(src))["params"]
  params = jax.tree.map(np.asarray, params)
  params["decoder"]["out_b"] = params["decoder"]["out_b"].copy()
  params["decoder"]["out_b"][EOS_ID] = -1e4  # every sentence runs T steps
  return model, params, src


def make_transformer(cfg: dict):
  model = models.build(dict(family="transformer", dropout=0.0, **cfg), V, V)
  rng = np.random.default_rng(0)
  src = rng.integers(4, V, (B, S)).astype(np.int32)
  params = model.init(jax.random.PRNGKey(0), jnp.asarray(src), jnp.asarray(src))["params"]
  params = jax.tree.map(np.array, params)  # writable copies
  params["out_b"][EOS_ID] = -1e4  # every sentence runs T steps
  return model, params, src


class TorchDecoder(torch.nn.Module):
  """The same model as seq2seq_jax's `rnn` family (lstm, 1 layer, unidirectional encoder)."""

  def __init__(self, params, attention, feeding):
    super().__init__()
    enc, dec = params["encoder"], params["decoder"]
    t = lambda a: torch.from_numpy(np.array(a, np.float32))
    self.attention, self.feeding = attention, feeding
    self.src_embed = torch.nn.Embedding.from_pretrained(t(enc["embedding"]))
    self.tgt_embed = torch.nn.Embedding.from_pretrained(t(dec["embedding"]))
    self.encoder = torch.nn.LSTM(E, H, batch_first=True)
    self.cell = torch.nn.LSTMCell(E + (H if feeding else 0), H)
    for module, p, sfx in ((self.encoder, enc["layer0_fwd"], "_l0"),
                           (self.cell, dec["layer0"], "")):
      for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        value = t(p[name]).T if name.startswith("w") else t(p[name])
        getattr(module, f"weight_{name[2:]}{sfx}" if name.startswith("w") else
                f"bias_{name[2:]}{sfx}").data.copy_(value)
    if attention == "general":
      self.w_a, self.w_c = t(dec["attention"]["w_a"]), t(dec["w_c"])
    self.out_w, self.out_b = t(dec["out_w"]), t(dec["out_b"])

  def start(self, src, k=1):
    memory, (h, _) = self.encoder(self.src_embed(src))
    # decoder_init="last": the encoder's final h starts both h and the cell state c.
    memory, h = (x.repeat_interleave(k, 0) for x in (memory, h[0]))
    c = h
    keys = memory @ self.w_a if self.attention == "general" else None
    mask = (src != PAD_ID).repeat_interleave(k, 0)
    return memory, keys, mask, (h, c, torch.zeros(len(h), H))

  def step(self, memory, keys, mask, state, tokens):
    """One step for `tokens [rows]`: new state, log-probs, attention weights."""
    h, c, feed = state
    x = self.tgt_embed(tokens)
    if self.feeding:
      x = torch.cat([x, feed], -1)
    h, c = self.cell(x, (h, c))
    out, weights = h, None
    if self.attention != "none":
      scores = torch.bmm(keys, h[:, :, None])[:, :, 0].masked_fill(~mask, float("-inf"))
      weights = torch.softmax(scores, -1)
      context = torch.bmm(weights[:, None], memory)[:, 0]
      out = torch.tanh(torch.cat([context, h], -1) @ self.w_c)
    logp = torch.log_softmax(out @ self.out_w + self.out_b, -1)
    logp[:, PAD_ID] = float("-inf")
    logp[:, SOS_ID] = float("-inf")
    return (h, c, out), logp, weights

  @torch.inference_mode()
  def greedy(self, src, max_len):
    memory, keys, mask, state = self.start(src)
    tokens = torch.full((len(src),), SOS_ID, dtype=torch.long)
    finished = torch.zeros(len(src), dtype=torch.bool)
    outputs, attn = [], []
    for _ in range(max_len):
      state, logp, weights = self.step(memory, keys, mask, state, tokens)
      tokens = logp.argmax(-1)
      outputs.append(tokens.masked_fill(finished, PAD_ID))
      attn.append(weights)
      finished |= tokens == EOS_ID
      if finished.all():
        break
    return torch.stack(outputs, 1)

  @torch.inference_mode()
  def beam(self, src, k, max_len, alpha):
    batch = len(src)
    memory, keys, mask, state = self.start(src, k)
    alive_lp = torch.full((batch, k), float("-inf"))
    alive_lp[:, 0] = 0.0
    alive_seq = torch.full((batch * k, 0), SOS_ID, dtype=torch.long)
    alive_attn = None
    tokens = torch.full((batch * k,), SOS_ID, dtype=torch.long)
    finished = [[] for _ in range(batch)]  # (score, log_prob, tokens)
    done = [False] * batch
    penalty = lambda n: ((5.0 + n) / 6.0) ** alpha
    for t in range(max_len):
      state, logp, weights = self.step(memory, keys, mask, state, tokens)
      cand = (alive_lp[:, :, None] + logp.view(batch, k, V)).view(batch, k * V)
      top_lp, top_idx = cand.topk(k, -1)
      parent = (top_idx // V + torch.arange(batch)[:, None] * k).view(-1)
      tokens = (top_idx % V).view(-1)
      state = tuple(s.index_select(0, parent) for s in state)
      alive_seq = torch.cat([alive_seq.index_select(0, parent), tokens[:, None]], 1)
      if weights is not None:
        w = weights.index_select(0, parent)[:, None]
        alive_attn = w if alive_attn is None else torch.cat(
            [alive_attn.index_select(0, parent), w], 1)
      ends = (tokens == EOS_ID).view(batch, k) | (t + 1 >= max_len)
      alive_lp = top_lp.masked_fill(ends, float("-inf"))
      ends_l, lp_l = ends.tolist(), top_lp.tolist()
      best_alive = alive_lp.max(1).values.tolist()
      for b in range(batch):
        if done[b]:
          continue
        for j in range(k):
          if ends_l[b][j] and lp_l[b][j] > float("-inf"):
            finished[b].append((lp_l[b][j] / penalty(t + 1), lp_l[b][j], alive_seq[b * k + j]))
        finished[b].sort(key=lambda f: -f[0])
        del finished[b][k:]
        worst = finished[b][-1][0] if len(finished[b]) == k else float("-inf")
        done[b] = t + 1 >= max_len or worst >= best_alive[b] / penalty(max_len)
      if all(done):
        break
    return [f[0][2] for f in finished]


def _t(a):
  return torch.from_numpy(np.array(a, np.float32))


def torch_transformer(params, cfg: dict) -> torch.nn.Transformer:
  """`nn.Transformer` (post-norm, no final norms) holding our weights."""
  d = cfg["d_model"]
  net = torch.nn.Transformer(d, cfg["num_heads"], cfg["encoder_layers"], cfg["decoder_layers"],
                             cfg["ff_dim"], dropout=0.0, batch_first=True)
  net.encoder.norm = net.decoder.norm = None

  def attention(mha, p):
    mha.in_proj_weight.copy_(torch.cat([_t(p[n]["kernel"]).T for n in ("query", "key", "value")]))
    mha.in_proj_bias.copy_(torch.cat([_t(p[n]["bias"]) for n in ("query", "key", "value")]))
    mha.out_proj.weight.copy_(_t(p["out"]["kernel"]).T)
    mha.out_proj.bias.copy_(_t(p["out"]["bias"]))

  def rest(layer, p, norms):
    for name in ("linear1", "linear2"):
      getattr(layer, name).weight.copy_(_t(p["ff"][name]["kernel"]).T)
      getattr(layer, name).bias.copy_(_t(p["ff"][name]["bias"]))
    for j in range(1, norms + 1):
      getattr(layer, f"norm{j}").weight.copy_(_t(p[f"norm{j}"]["scale"]))
      getattr(layer, f"norm{j}").bias.copy_(_t(p[f"norm{j}"]["bias"]))

  with torch.no_grad():
    for i, layer in enumerate(net.encoder.layers):
      attention(layer.self_attn, params[f"encoder_{i}"]["self_attn"])
      rest(layer, params[f"encoder_{i}"], 2)
    for i, layer in enumerate(net.decoder.layers):
      attention(layer.self_attn, params[f"decoder_{i}"]["self_attn"])
      attention(layer.multihead_attn, params[f"decoder_{i}"]["cross_attn"])
      rest(layer, params[f"decoder_{i}"], 3)
  return net.eval()


class TorchTransformerDecoder(torch.nn.Module):
  """seq2seq_jax's `transformer` family: `nn.Transformer`'s encoder and an
  incremental decoder with a key/value cache over its decoder layers' weights.
  `start` and `step` have `TorchDecoder`'s signatures, so its greedy and beam
  loops run unchanged (every tensor of the state has one row per hypothesis)."""
  greedy = TorchDecoder.greedy
  beam = TorchDecoder.beam

  def __init__(self, params, cfg: dict):
    super().__init__()
    self.d, self.h = cfg["d_model"], cfg["num_heads"]
    self.dh = self.d // self.h
    self.net = torch_transformer(params, cfg)
    self.src_embed, self.tgt_embed = _t(params["src_embedding"]), _t(params["tgt_embedding"])
    self.positions = _t(sinusoidal_positions(jnp.arange(max(S, T) + 1), self.d))
    self.out_w, self.out_b = _t(params["out_w"]), _t(params["out_b"])

  def _heads(self, x):  # [rows, len, d] -> [rows, h, len, dh]
    return x.view(x.shape[0], -1, self.h, self.dh).transpose(1, 2)

  def start(self, src, k=1):
    """Encoder output -> per decoder layer the cross-attention keys and values
    (`[rows, h, src_len, dh]`), the source mask, and an empty cache."""
    pad = src == PAD_ID
    x = self.src_embed[src] * self.d ** 0.5 + self.positions[:src.shape[1]]
    memory = self.net.encoder(x, src_key_padding_mask=pad if pad.any() else None)
    cross_k, cross_v = [], []
    for layer in self.net.decoder.layers:
      w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
      kv = torch.nn.functional.linear(memory, w[self.d:], b[self.d:])
      cross_k.append(self._heads(kv[..., :self.d]).repeat_interleave(k, 0))
      cross_v.append(self._heads(kv[..., self.d:]).repeat_interleave(k, 0))
    mask = (~pad).repeat_interleave(k, 0)[:, None, None, :]  # [rows, 1, 1, src_len]
    empty = torch.zeros(len(mask), self.h, 0, self.dh)
    return cross_v, cross_k, mask, tuple(empty for _ in range(2 * len(cross_k)))

  def step(self, cross_v, cross_k, mask, state, tokens):
    """One token a row: state (per layer the self-attention keys and values
    so far, `[rows, h, t, dh]`), log-probs, the last layer's cross-attention
    weights averaged over heads."""
    f = torch.nn.functional
    rows, t = len(tokens), state[0].shape[2]
    x = self.tgt_embed[tokens] * self.d ** 0.5 + self.positions[t]  # [rows, d]
    new_state = []
    for i, layer in enumerate(self.net.decoder.layers):
      sa = layer.self_attn
      q, k, v = f.linear(x, sa.in_proj_weight, sa.in_proj_bias).view(
          rows, 3, self.h, 1, self.dh).unbind(1)
      k, v = torch.cat([state[2 * i], k], 2), torch.cat([state[2 * i + 1], v], 2)
      new_state += [k, v]
      a = f.scaled_dot_product_attention(q, k, v).reshape(rows, self.d)
      x = layer.norm1(x + sa.out_proj(a))
      ca = layer.multihead_attn
      q = f.linear(x, ca.in_proj_weight[:self.d], ca.in_proj_bias[:self.d])
      scores = torch.matmul(q.view(rows, self.h, 1, self.dh), cross_k[i].transpose(2, 3))
      scores = (scores / self.dh ** 0.5).masked_fill(~mask, float("-inf"))
      weights = torch.softmax(scores, -1)  # [rows, h, 1, src_len]
      a = torch.matmul(weights, cross_v[i]).reshape(rows, self.d)
      x = layer.norm2(x + ca.out_proj(a))
      x = layer.norm3(x + layer.linear2(torch.relu(layer.linear1(x))))
    logp = torch.log_softmax(torch.addmm(self.out_b, x, self.out_w), -1)
    logp[:, PAD_ID] = float("-inf")
    logp[:, SOS_ID] = float("-inf")
    return tuple(new_state), logp, weights[:, :, 0].mean(1)


def matmul_floor(attention: str, feeding: bool, rows: int) -> float:
  """Seconds the matmuls of one batch take alone, each at the better of XLA's
  and PyTorch's measured speed: a floor under any implementation that does
  the same arithmetic on this machine (`rows`: B for greedy, B*K for beam)."""
  enc = [(B * S, E, 4 * H, 1), (B, H, 4 * H, S)]
  dec = [(rows, E + (H if feeding else 0), 4 * H, T), (rows, H, 4 * H, T), (rows, H, V, T)]
  if attention != "none":
    dec += [(B * S, H, H, 1), (rows, 2 * H, H, T)]
  return sum(count * best_matmul_time(m, k, n) for m, k, n, count in enc + dec)


def transformer_matmul_floor(cfg: dict, rows: int) -> float:
  """`matmul_floor` of the Transformer: the projections and feed-forward
  matmuls with the cache (the small per-head attention products left out)."""
  d, f = cfg["d_model"], cfg["ff_dim"]
  enc = [(B * S, d, d, 4), (B * S, d, f, 1), (B * S, f, d, 1)]
  enc = [(m, k, n, c * cfg["encoder_layers"]) for m, k, n, c in enc]
  layer = [(rows, d, d, 6 * T), (rows, d, f, T), (rows, f, d, T)]
  dec = [(B * S, d, 2 * d, cfg["decoder_layers"])]  # cross-attention keys and values
  dec += [(m, k, n, c * cfg["decoder_layers"]) for m, k, n, c in layer]
  dec += [(rows, d, V, T)]
  return sum(count * best_matmul_time(m, k, n) for m, k, n, count in enc + dec)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--rows", default=DEFAULT_ROWS,
                      help=f"of {', '.join([*ROWS, *TRANSFORMER_ROWS])}")
  parser.add_argument("--beam", type=int, default=5)
  parser.add_argument("--floor", action="store_true", help="also the f32 matmul-only floor")
  args = parser.parse_args()
  torch.set_num_threads(2)
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"(2 threads), {os.cpu_count()} cpus; batch {B}, source {S}, {T} output tokens, "
        f"vocab {V}, emb {E}, hidden {H}, beam {args.beam}, GNMT alpha {ALPHA}; median of "
        f"{args.reps} calls")
  header = (f"| {'row':<16} | {'search':<7} | {'implementation':<12} | {'s/batch':>7} | "
            f"{'sent/s':>7} | {'vs torch':>8} | {'same output':>11} |")
  print(header)
  print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
  for row in args.rows.split(","):
    if row in TRANSFORMER_ROWS:
      model, params, src = make_transformer(TRANSFORMER_ROWS[row])
      ref = TorchTransformerDecoder(params, TRANSFORMER_ROWS[row])
      floor = functools.partial(transformer_matmul_floor, TRANSFORMER_ROWS[row])
    else:
      attention, feeding = ROWS[row]
      model, params, src = make_model(attention, feeding)
      ref = TorchDecoder(params, attention, feeding)
      floor = functools.partial(matmul_floor, attention, feeding)
    src_t = torch.from_numpy(src).long()
    kw = dict(max_len_a=0.0, max_len_b=T)
    outputs = {}

    def ours(search, outputs=outputs, model=model, params=params, src=src, kw=kw):
      def run():
        if search == "greedy":
          out = decoding.greedy(model, params, src, decoding.DecodeOptions(**kw))
        else:
          out = decoding.beam_search(model, params, src, decoding.DecodeOptions(
              beam_size=args.beam, length_penalty=ALPHA, **kw))
        outputs["seq2seq_jax", search] = np.asarray(out.tokens[:, 0])
      return run

    def theirs(search, outputs=outputs, ref=ref, src_t=src_t):
      def run():
        if search == "greedy":
          out = ref.greedy(src_t, T).numpy()
        else:
          out = torch.stack(ref.beam(src_t, args.beam, T, ALPHA)).numpy()
        outputs["pytorch", search] = out
      return run

    for search in ("greedy", "beam"):
      secs = measure({"seq2seq_jax": ours(search), "pytorch": theirs(search)}, args.reps)
      a, b = outputs["seq2seq_jax", search], outputs["pytorch", search]
      same = np.mean([np.array_equal(x[:len(y)], y) for x, y in zip(a, b)])
      if row in TRANSFORMER_ROWS and search == "greedy":  # the same model in PyTorch
        assert np.array_equal(a[:CHECKED], b[:CHECKED]), \
            f"{row}: PyTorch's greedy tokens differ from ours"
      for name, sec in secs.items():
        print(f"| {row:<16} | {search:<7} | {name:<12} | {sec:7.3f} | {B / sec:7.1f} | "
              f"{secs['pytorch'] / sec:7.2f}x | {same:11.2f} |", flush=True)
      if args.floor:
        sec = floor(B if search == "greedy" else B * args.beam)
        print(f"| {row:<16} | {search:<7} | {'matmul floor':<12} | {sec:7.3f} | {B / sec:7.1f} | "
              f"{secs['pytorch'] / sec:7.2f}x | {'':>11} |", flush=True)


if __name__ == "__main__":
  main()
