"""The sweep runner: `python -m seq2seq_jax.sweep` (see `__main__`).

`members` (a config's `get_sweep()` expanded into named runs, their status and
locks), `stacks` (which members train as one program), `driver` (one process per
stack, `--parallel` at once), `worker` (a stack's process: `training.loop` over
its members; a solo member is a stack of one), `summary` (tables and plots).
"""

from seq2seq_jax.sweep.members import Member, SweepError, expand

__all__ = ["Member", "SweepError", "expand"]
