"""Learning parity: loss and every parameter's gradient against an independent PyTorch twin.

`tests/torch_twin.py` is a JoeyNMT-style encoder-decoder written for these tests (packed
`nn.LSTM` / `nn.GRU` encoder, a Python loop over `nn.LSTM` decoder steps). With weights
copied across (dropout off), seq2seq_jax's training objective (`step.loss_and_metrics`:
the teacher-forced fast path with the fused output projection, the summed loss over the
number of sentences) and its per-step path (scheduled sampling's scan, every token gold,
per-token loss) must give the twin's loss and gradients on real padded batches of
`debian:de-en`, taken from the bucketed batcher as training takes them (a narrow bucket
with all-padding filler rows, and the widest one). The filler rows go to the twin as
nothing at all: they must add nothing.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_twin import TorchTwin

from configs import deen_attention
from seq2seq_jax import data, models
from seq2seq_jax.tokens import PAD_ID
from seq2seq_jax.training import losses, step

LABEL_SMOOTHING = 0.1
# cell, attention, bidirectional, input feeding, layers, reverse_source, decoder_init, bucket
CASES = [("lstm", "general", True, True, 1, False, "last", "narrowest"),  # deen_attention's
         ("lstm", "general", True, True, 1, False, "last", "widest"),
         ("lstm", "general", True, True, 2, True, "last_state", "narrowest"),
         ("gru", "additive", True, False, 2, False, "last", "narrowest"),
         ("lstm", "dot", False, True, 2, False, "zero", "narrowest"),
         ("rnn", "concat", True, True, 1, True, "last", "narrowest"),
         ("lstm", "scaled_dot", True, False, 1, False, "last", "narrowest"),
         ("gru", "none", True, False, 2, False, "last", "narrowest")]


@pytest.fixture(scope="module")
def batcher():
  """Training batches of `configs/deen_attention.py:quick`'s data (sentencepiece 500)."""
  config = deen_attention.get_config("quick")
  dataset = data.load(config.dataset)
  batches = data.TrainBatches(*dataset.arrays["train"], 24, 0,
                              config.dataset.bucket_boundaries)
  return dataset, batches


def bucket_batch(batches, bucket: str):
  """A batch of the widest bucket, or the narrowest bucket's batch with filler rows."""
  widths = [s for s, _ in batches.shapes]
  for position in range(batches.per_epoch):
    batch = batches(position)
    width = batch["src"].shape[1]
    if bucket == "widest" and width == max(widths):
      return batch
    if bucket == "narrowest" and width == min(widths) and \
        not np.all(np.any(batch["src"] != PAD_ID, axis=1)):
      return batch
  raise AssertionError(f"no {bucket} batch")


def random_biases(params, seed=0):
  """Non-zero biases, so that every term of the cells is exercised."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, a: a + 0.1 * rng.standard_normal(a.shape).astype(np.float32)
      if jax.tree_util.keystr(path).endswith(("b_ih']", "b_hh']", "out_b']", "['b']"))
      else a, params)


def twin_loss_and_grads(twin, batch, normalization):
  real = np.any(batch["src"] != PAD_ID, axis=1)
  twin.zero_grad()
  loss = twin.loss(torch.from_numpy(batch["src"][real]).long(),
                   torch.from_numpy(batch["tgt"][real]).long(), LABEL_SMOOTHING, normalization)
  loss.backward()
  return loss.item(), twin.grads()


def assert_trees_close(ours, theirs):
  """Every leaf within 1e-5 of the twin's, relative to that leaf's largest entry."""
  for path, value in jax.tree_util.tree_flatten_with_path(ours)[0]:
    expected = theirs
    for key in path:
      expected = expected[key.key]
    scale = np.max(np.abs(expected))
    assert scale > 0, jax.tree_util.keystr(path)
    np.testing.assert_allclose(np.asarray(value), expected, rtol=0, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("cell,attention,bidirectional,feeding,layers,reverse,init,bucket",
                         CASES)
def test_loss_and_gradients_equal_the_torch_twin(batcher, cell, attention, bidirectional,
                                                  feeding, layers, reverse, init, bucket):
  dataset, batches = batcher
  batch = bucket_batch(batches, bucket)
  kw = dict(cell=cell, attention=attention, bidirectional=bidirectional,
            input_feeding=feeding, num_layers=layers, reverse_source=reverse,
            decoder_init=init, embed_dim=16, hidden_dim=24, attention_dim=12)
  model = models.build(kw, len(dataset.src_vocab), len(dataset.tgt_vocab))
  jbatch = {k: jnp.asarray(v) for k, v in batch.items()}
  params = random_biases(model.init(jax.random.PRNGKey(1), jbatch["src"],
                                    jbatch["tgt"])["params"])
  twin = TorchTwin(len(dataset.src_vocab), len(dataset.tgt_vocab), **kw).copy_from(params)

  # The training objective: fast path, fused output projection and cross-entropy,
  # summed over tokens and divided by the number of sentences.
  twin_loss, twin_grads = twin_loss_and_grads(twin, batch, "sentences")
  (loss, _), grads = jax.value_and_grad(step.loss_and_metrics, has_aux=True)(
      params, model, jbatch, None, jax.random.PRNGKey(0), False, LABEL_SMOOTHING, "sentences")
  np.testing.assert_allclose(float(loss), twin_loss, rtol=1e-5)
  assert_trees_close(grads, twin_grads)

  # The per-step path (scheduled sampling's scan, every token gold), per token.
  twin_loss, twin_grads = twin_loss_and_grads(twin, batch, "tokens")

  def per_step_loss(params):
    out = model.apply({"params": params}, jbatch["src"], jbatch["tgt"], tf_prob=1.0,
                      rng=jax.random.PRNGKey(0), per_step=True)
    ce = losses.masked_cross_entropy(out.logits, jbatch["tgt"], LABEL_SMOOTHING)
    return ce["loss_sum"] / ce["num_tokens"]

  loss, grads = jax.value_and_grad(per_step_loss)(params)
  np.testing.assert_allclose(float(loss), twin_loss, rtol=1e-5)
  assert_trees_close(grads, twin_grads)
