"""The Transformer family (Vaswani et al. 2017): `config` (`TransformerConfig`),
`layers` (attention, feed-forward, encoder and decoder layers), `model`
(`TransformerSeq2Seq`, the model interface with a key/value cache for decoding).
"""

from seq2seq_jax.models.transformer.config import TransformerConfig
from seq2seq_jax.models.transformer.model import TransformerSeq2Seq

__all__ = ["TransformerConfig", "TransformerSeq2Seq"]
