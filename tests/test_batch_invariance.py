"""A sentence decodes to the same output and score alone and in a batch of other
sentences of other lengths (greedy and beam search; users of other toolkits report
BLEU changing with the batch size). Tolerance: scores to 1e-5 relative, the
rounding of kernels of another batch size and width; the tokens exactly."""

import numpy as np
import pytest

from seq2seq_jax import decoding
from seq2seq_jax.training import trained

SOURCES = ["seven", "forty-two thousand, three hundred and one", "three hundred",
           "ninety-nine thousand, nine hundred and ninety-nine", "one", "eighty",
           "twelve thousand and five"]


@pytest.mark.parametrize("beam_size", [1, 4])
def test_a_sentence_decodes_alike_alone_and_in_a_padded_batch(quick_run, beam_size):
  config, model, params, src_vocab, _ = trained.load_model(quick_run, "best")
  ids = [src_vocab.encode(s) for s in SOURCES]
  batch = np.zeros((len(ids), max(map(len, ids)) + 5), np.int32)  # padded past the longest
  for i, row in enumerate(ids):
    batch[i, :len(row)] = row
  options = decoding.DecodeOptions.from_eval_config(config.eval, beam_size=beam_size,
                                                    length_penalty=0.6)
  together = decoding.decode(model, params, batch, options)
  for i, row in enumerate(ids):
    alone = decoding.decode(model, params, np.asarray([row], np.int32), options)
    np.testing.assert_allclose(np.asarray(together.scores[i]), np.asarray(alone.scores[0]),
                               rtol=1e-5, err_msg=SOURCES[i])
    for n in range(beam_size):
      length = int(alone.lengths[0, n])
      assert int(together.lengths[i, n]) == length, (SOURCES[i], n)
      assert np.array_equal(np.asarray(together.tokens[i, n, :length]),
                            np.asarray(alone.tokens[0, n, :length])), (SOURCES[i], n)
