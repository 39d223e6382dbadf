"""The RNN family: pure cells scanned inside Flax modules, six attention scores.

`cells` (the recurrent cells, `CELLS`), `attention` (the scores, `SCORES`),
`config` (`RNNConfig`), `encoder`, `decoder` (parameters, one step), `model`
(`RNNSeq2Seq`, the model interface and the training-time paths).
"""

from seq2seq_jax.models.rnn.config import RNNConfig
from seq2seq_jax.models.rnn.model import RNNSeq2Seq

__all__ = ["RNNConfig", "RNNSeq2Seq"]
