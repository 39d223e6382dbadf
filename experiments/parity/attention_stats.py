"""How much attention sits on one source token: a number for "collapsed" versus "aligned".

    python experiments/parity/attention_stats.py workdirs/parity/members/*

For each training workdir, the last checkpoint's teacher-forced attention weights over the
first 256 dev pairs: the mean weight on each sentence's last source token (1/len for
uniform weights; near 1 when attention has collapsed there), the mean entropy of the
weights against that of uniform weights, and the encoder's final cell state (mean |c|,
max |c|). Run it with the code that trained the workdir: a checkpoint made before the
parity fix must be read by that code, since the decoder's initial state changed
(`git worktree add /tmp/before 50191e7`, then `PYTHONPATH=/tmp/before python ...`).
"""

import sys

import jax.numpy as jnp
import numpy as np

from seq2seq_jax import data
from seq2seq_jax.tokens import PAD_ID
from seq2seq_jax.training import trained

PAIRS = 256


def attention_stats(workdir) -> dict:
  config, model, params, src_vocab, tgt_vocab = trained.load_model(workdir, "last")
  src, tgt = data.load(config.dataset, src_vocab, tgt_vocab).arrays["dev"]
  src, tgt = jnp.asarray(src[:PAIRS]), jnp.asarray(tgt[:PAIRS])
  weights = np.asarray(model.apply({"params": params}, src, tgt).attention)  # [B, T, S]
  final = model.apply({"params": params}, src, method=lambda m, s: m.encode(s)).final[0]
  src_len = np.asarray(jnp.sum(src != PAD_ID, axis=1))
  tgt_mask = np.asarray(tgt != PAD_ID)
  on_last = np.mean([weights[b, tgt_mask[b], src_len[b] - 1].mean() for b in range(len(src))])
  entropy = -np.sum(weights * np.log(np.maximum(weights, 1e-12)), axis=-1)
  cell = np.abs(np.asarray(final.c)) if hasattr(final, "c") else np.zeros(1)
  return {"on_last": on_last, "uniform_on_last": np.mean(1.0 / src_len),
          "entropy": entropy[tgt_mask].mean(), "uniform_entropy": np.mean(np.log(src_len)),
          "cell_mean": cell.mean(), "cell_max": cell.max()}


def main():
  print("| workdir | weight on the last source token (uniform) | entropy (uniform) | "
        "encoder final mean abs c (max) |")
  print("|---|---|---|---|")
  for workdir in sys.argv[1:]:
    s = attention_stats(workdir)
    print(f"| {workdir} | {s['on_last']:.3f} ({s['uniform_on_last']:.3f}) | "
          f"{s['entropy']:.2f} ({s['uniform_entropy']:.2f}) | "
          f"{s['cell_mean']:.2f} ({s['cell_max']:.1f}) |")


if __name__ == "__main__":
  main()
