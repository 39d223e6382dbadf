"""Kill points for the kill-anywhere test (`tests/test_faults.py`).

With `SEQ2SEQ_JAX_KILL_AT=POINT` (or `POINT@STEP`) in its environment a run kills
itself with SIGKILL when it reaches that point of the training loop (or of
`data.prepare`), so that the test stops it at a known place (in the middle of
an orbax save, between an evaluation and its record, after the test record)
instead of racing a sleep.
Unset, which it always is outside that test, a point costs one lookup in
`os.environ`; points are passed at start-up, evaluations and saves, not per step.

The points: `loaded` (data and vocabularies, before config.json), `prepared`
(config.json written, nothing trained), `restored` (a checkpoint read back),
`train_record@N`, `evaluating@N` (before each batch of a dev evaluation in the
step loop), `evaluated@N` (dev or test decoded, not yet recorded),
`dev_record@N`, `saving@N` (an asynchronous orbax save in flight), `test_record`
and `outputs` (report and predictions written, the files not yet closed); in
`data.prepare`, `shard:SPLIT@N` (shard N of a split encoded and written).
`SEQ2SEQ_JAX_KILL_SIGNAL=SIGINT` (or SIGTERM) sends that signal instead: a Ctrl-C
at a place outside the step loop; `HANG` sends SIGTERM and then waits inside a
device computation that never returns, as a run stuck in one does (the signal's
Python handler then never runs: `cli.watch_stop_signals` ends the process).
"""

import os
import signal

ENV, SIGNAL_ENV = "SEQ2SEQ_JAX_KILL_AT", "SEQ2SEQ_JAX_KILL_SIGNAL"


def point(name: str, step: int | None = None) -> None:
  wanted = os.environ.get(ENV)
  if wanted and wanted == (name if step is None else f"{name}@{step}"):
    how = os.environ.get(SIGNAL_ENV, "SIGKILL")
    os.kill(os.getpid(), signal.Signals["SIGTERM" if how == "HANG" else how])
    if how == "HANG":
      _never_returning_device_call()


def _never_returning_device_call() -> None:
  import jax  # only here: this module is imported where jax is not
  import jax.numpy as jnp
  forever = jax.jit(lambda x: jax.lax.while_loop(lambda v: v < jnp.inf, lambda v: v + 1.0, x))
  jax.device_get(forever(jnp.float32(0)))
