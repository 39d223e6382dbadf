"""Gradient accumulation (`train.grad_accum_steps`): the cost of an update of N rows
made of K micro-batches against the same N rows as one batch, and the target tokens
a second of each. Both are `step.make_train_step` jitted with donation as
`training.loop` runs it; all forms are timed round-robin in this process (one
update of each in turn) after compiling, median over `--updates`.

    python benchmarks/accumulate.py [--rows 256] [--ks 1,2,4,8] [--updates 8]
        [--families rnn,transformer]

Models: `rnn` is `benchmarks/stack.py`'s `experiments` size (bidirectional LSTM
encoder 128 a direction, LSTM decoder 256 with additive attention, vocabularies of
4000); `transformer` is `configs/deen_transformer.py`'s `small` (d_model 256, 4
heads, feed-forward 1024, 3 + 3 layers) with vocabularies of 4000. Source and
target length 30, every row full, Adam, loss per token.
"""

import argparse
import time

import jax
import numpy as np

from seq2seq_jax import models
from seq2seq_jax.training import optim, step

L, VOCAB = 30, 4000
FAMILIES = {
    "rnn": dict(family="rnn", cell="lstm", attention="additive", bidirectional=True,
                input_feeding=False, embed_dim=128, hidden_dim=256, attention_dim=128,
                dropout=0.0),
    "transformer": dict(family="transformer", d_model=256, num_heads=4, ff_dim=1024,
                        encoder_layers=3, decoder_layers=3, dropout=0.0, norm="pre"),
}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--rows", type=int, default=256, help="rows of an update")
  parser.add_argument("--ks", default="1,2,4,8")
  parser.add_argument("--updates", type=int, default=8)
  parser.add_argument("--families", default="rnn,transformer")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  batch = {side: rng.integers(4, VOCAB, (args.rows, L)).astype(np.int32)
           for side in ("src", "tgt")}
  print(f"# {args.rows} rows x {L} target tokens an update; {jax.devices()[0].device_kind}")
  print("| model | K micro-batches | rows each | update (s) | target tokens/s | vs K=1 |")
  print("|---|---|---|---|---|---|")
  for family in args.families.split(","):
    model = models.build(FAMILIES[family], VOCAB, VOCAB)
    tx = optim.make_optimizer(1e-3, 1.0)
    forms = {}
    for k in (int(x) for x in args.ks.split(",")):
      fn = jax.jit(step.make_train_step(model, tx, loss_normalization="tokens",
                                        accumulate=k > 1), donate_argnums=(0,))
      data = batch if k == 1 else {s: x.reshape(k, -1, L) for s, x in batch.items()}
      state = step.init_state(model, tx, jax.random.PRNGKey(0), batch)
      state, _ = fn(state, data, jax.random.PRNGKey(1))  # compiled
      jax.block_until_ready(state)
      forms[k] = [fn, data, state, []]
    for _ in range(args.updates):  # round-robin
      for form in forms.values():
        fn, data, state, times = form
        t = time.perf_counter()
        form[2], _ = fn(state, data, jax.random.PRNGKey(1))
        jax.block_until_ready(form[2])
        times.append(time.perf_counter() - t)
    base = np.median(forms[min(forms)][3])
    for k, (_, _, _, times) in forms.items():
      median = np.median(times)
      print(f"| {family} | {k} | {args.rows // k} | {median:.3f} | "
            f"{args.rows * L / median:,.0f} | {base / median:.2f}x |")


if __name__ == "__main__":
  main()
