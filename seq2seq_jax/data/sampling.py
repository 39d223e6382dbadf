"""Subword regularisation (Kudo 2018): each training pair's SentencePiece (unigram)
segmentation drawn anew whenever a batch holds it.

`dataset.subword_alpha` > 0 turns it on for every side with a SentencePiece
vocabulary: a segmentation is drawn from the `dataset.subword_nbest` best with
probabilities proportional to P(x)^alpha (Kudo's l-best sampling; a segmentation's
log P is the sum of its pieces' scores). The draw is numpy's, from a generator
seeded by (seed, epoch, pair, side), so a resumed run draws what the uninterrupted
one drew and each epoch draws afresh. (SentencePiece's own sampling is not used: its
generator gave other draws in every process, seeded or not.) Dev and test keep the
best segmentation, the prepared tokens.
"""

import numpy as np

from seq2seq_jax.tokens import EOS_ID, PAD_ID


class SubwordSampler:
  """Token arrays of training rows with sampled segmentations (see the module docstring)."""

  def __init__(self, texts, src_vocab, tgt_vocab, alpha: float, nbest: int, seed: int):
    self.texts, self.alpha, self.nbest, self.seed = texts, alpha, nbest, seed
    self.sides = []  # (side, vocab, each piece's log probability)
    for side, vocab in enumerate((src_vocab, tgt_vocab)):
      if vocab.kind == "sentencepiece":
        sp = vocab.sp
        self.sides.append((side, vocab, np.array([sp.get_score(i)
                                                  for i in range(sp.get_piece_size())])))

  def __call__(self, rows: np.ndarray, epoch: int, best: list) -> list:
    """`best`: the batch's `[src, tgt]` arrays of the best segmentation (filler rows,
    `rows` -1, all padding). Returns them with each real row of a SentencePiece side
    drawn anew; a draw longer than its array's width keeps the best one."""
    out = [b.copy() for b in best]
    for side, vocab, piece_scores in self.sides:
      width = out[side].shape[1]
      for i, row in enumerate(rows):
        if row < 0:
          continue
        candidates = vocab.sp.nbest_encode_as_ids(self.texts[int(row)][side],
                                                  nbest_size=self.nbest)
        logits = self.alpha * np.array([piece_scores[c].sum() for c in candidates])
        p = np.exp(logits - logits.max())
        rng = np.random.default_rng([self.seed, epoch, int(row), side])
        ids = list(candidates[rng.choice(len(candidates), p=p / p.sum())])
        if side == 1:
          ids.append(EOS_ID)
        if len(ids) <= width:
          out[side][i] = PAD_ID
          out[side][i, :len(ids)] = ids
    return out
