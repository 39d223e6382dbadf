"""Warm start (`train.init_from=WORKDIR[:CHECKPOINT]`): fine-tuning from another run.

The new run takes the parameters of the other run's checkpoint (`best` unless
named: `last`, `average` or a step) and its vocabularies (the embeddings and the
output layer are rows of them), with a fresh optimizer state at step 0; its own
data, schedule and the rest of its config are its own. Once the run has
checkpoints of its own, resuming restores those and the other run is not read.
"""

from pathlib import Path

import jax
import numpy as np

from seq2seq_jax.training import checkpoints, trained

VOCABULARIES = ("vocab_src.json", "vocab_tgt.json")


def parse(init_from: str) -> tuple[Path, str]:
  """`DIR` or `DIR:best|last|average|STEP` -> (directory, checkpoint)."""
  head, _, tail = init_from.rpartition(":")
  if head and (tail in ("best", "last", "average") or tail.isdigit()):
    return Path(head).expanduser().resolve(), tail
  return Path(init_from).expanduser().resolve(), "best"


class WarmStart:
  """The other run's parameters and vocabularies, read once at the start."""

  def __init__(self, init_from: str):
    self.init_from = init_from
    self.directory, self.checkpoint = parse(init_from)
    try:
      _, _, params, self.src_vocab, self.tgt_vocab = trained.load_model(self.directory,
                                                                        self.checkpoint)
    except (ValueError, checkpoints.CheckpointError) as e:
      raise ValueError(f"train.init_from={init_from}: {e}") from None
    self.params = jax.tree.map(np.asarray, params)

  def check_vocabularies(self, workdir: Path) -> None:
    """A workdir that already has vocabularies of its own must have the other run's."""
    for name in VOCABULARIES:
      own, other = workdir / name, self.directory / name
      if own.exists() and own.read_bytes() != other.read_bytes():
        raise ValueError(f"train.init_from={self.init_from}: {own} differs from {other}: the "
                         "warm-started model's embeddings are rows of the other run's "
                         "vocabulary; use a fresh --workdir")

  def into(self, state, tx):
    """`state` with the other run's parameters (shapes checked) and a fresh optimizer."""
    ours = jax.tree_util.tree_flatten_with_path(state.params)[0]
    theirs = dict(jax.tree_util.tree_flatten_with_path(self.params)[0])
    for path, leaf in ours:
      name = jax.tree_util.keystr(path)
      if path not in theirs or theirs[path].shape != leaf.shape:
        got = "absent" if path not in theirs else f"shape {theirs[path].shape}"
        raise ValueError(f"train.init_from={self.init_from}: parameter {name} is {got} there "
                         f"and {leaf.shape} here: the model config must match the other "
                         "run's (cell, attention, sizes, layers, family)")
    if len(theirs) != len(ours):
      raise ValueError(f"train.init_from={self.init_from}: the other run's model has "
                       f"{len(theirs)} parameter arrays, this one {len(ours)}: the model "
                       "config must match")
    params = jax.tree.map(lambda mine, other: np.asarray(other, mine.dtype), state.params,
                          jax.tree_util.tree_unflatten(
                              jax.tree.structure(state.params),
                              [theirs[path] for path, _ in ours]))
    return state.with_served(params).replace(opt_state=tx.init(params))
