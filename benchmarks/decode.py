"""Decoding speed at the reference size: seq2seq_jax.decoding against PyTorch.

    python benchmarks/decode.py [--reps 5] [--rows none,general] [--beam 5]

Reference size: 1-layer LSTM encoder and decoder, embedding 256, hidden 512,
vocabularies of 8000, batch 64, source length 30, 30 output tokens (the `<eos>`
logit is biased down by 1e4 in both implementations, so that every sentence
runs the full 30 steps). Rows: `none` (no attention) and `general` (Luong
general attention with input feeding, OpenNMT-py's default). Both
implementations hold the same weights (copied from the Flax params) and run the
same algorithm; the table gives sentences/s (medians, one call of each in
turn, so that load on a shared machine hits them alike) and how often the two
produced the same output.

* seq2seq_jax: `decoding.greedy` / `decoding.beam_search`, one compiled
  program each (`lax.while_loop`), attention weights of the output kept.
* PyTorch (`torch.set_num_threads(2)`, `torch.inference_mode`): a Python loop
  over time steps around `nn.LSTMCell`, as OpenNMT-py and JoeyNMT decode.
  Greedy stops when every sentence has produced `<eos>`. Beam search is
  OpenNMT-py's: the top K of the K x V continuations, `index_select` of the
  states, sequences and attention, and a Python loop over the sentences that
  moves finished hypotheses into per-sentence lists and decides when a
  sentence is done (the same rule and length penalty as ours).
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

from seq2seq_jax import decoding, models
from seq2seq_jax.tokens import EOS_ID, PAD_ID, SOS_ID

sys.path.insert(0, os.path.dirname(__file__))
from train_step import best_matmul_time, measure  # noqa: E402  (shared timing helpers)

B, S, T, V, E, H = 64, 30, 30, 8000, 256, 512
ROWS = {"none": ("none", False), "general": ("general", True)}
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


def matmul_floor(attention: str, feeding: bool, rows: int) -> float:
  """Seconds the matmuls of one batch take alone, each at the better of XLA's
  and PyTorch's measured speed: a floor under any implementation that does
  the same arithmetic on this machine (`rows`: B for greedy, B*K for beam)."""
  enc = [(B * S, E, 4 * H, 1), (B, H, 4 * H, S)]
  dec = [(rows, E + (H if feeding else 0), 4 * H, T), (rows, H, 4 * H, T), (rows, H, V, T)]
  if attention != "none":
    dec += [(B * S, H, H, 1), (rows, 2 * H, H, T)]
  return sum(count * best_matmul_time(m, k, n) for m, k, n, count in enc + dec)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--rows", default="none,general")
  parser.add_argument("--beam", type=int, default=5)
  parser.add_argument("--floor", action="store_true", help="also the f32 matmul-only floor")
  args = parser.parse_args()
  torch.set_num_threads(2)
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"(2 threads), {os.cpu_count()} cpus; batch {B}, source {S}, {T} output tokens, "
        f"vocab {V}, emb {E}, hidden {H}, beam {args.beam}, GNMT alpha {ALPHA}; median of "
        f"{args.reps} calls")
  header = (f"| {'row':<8} | {'search':<7} | {'implementation':<12} | {'s/batch':>7} | "
            f"{'sent/s':>7} | {'vs torch':>8} | {'same output':>11} |")
  print(header)
  print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
  for row in args.rows.split(","):
    attention, feeding = ROWS[row]
    model, params, src = make_model(attention, feeding)
    ref = TorchDecoder(params, attention, feeding)
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
      for name, sec in secs.items():
        print(f"| {row:<8} | {search:<7} | {name:<12} | {sec:7.3f} | {B / sec:7.1f} | "
              f"{secs['pytorch'] / sec:7.2f}x | {same:11.2f} |", flush=True)
      if args.floor:
        sec = matmul_floor(attention, feeding, B if search == "greedy" else B * args.beam)
        print(f"| {row:<8} | {search:<7} | {'matmul floor':<12} | {sec:7.3f} | {B / sec:7.1f} | "
              f"{secs['pytorch'] / sec:7.2f}x | {'':>11} |", flush=True)


if __name__ == "__main__":
  main()
