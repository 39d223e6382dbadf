"""Moved to `seq2seq_jax.models.rnn.cells`; kept so `from seq2seq_jax import cells` works."""

from seq2seq_jax.models.rnn.cells import *  # noqa: F401,F403  (CELLS, Cell, get_cell, scan_cell, ...)
