"""Ctrl-C and SIGTERM in the training loop: a stop at the next step boundary."""

import contextlib
import logging
import signal
import threading

log = logging.getLogger(__name__)


class RunInterrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM stopped a run at a step boundary, its checkpoints complete."""

  def __init__(self, signum: int, step: int, saved: int | None):
    self.exit_code = 128 + signum
    name = signal.Signals(signum).name
    super().__init__(f"stopped by {name} after step {step}; " + (
        f"the last checkpoint is step {saved}: the same command resumes from it"
        if saved is not None else "no checkpoint was saved yet: the same command starts over"))


class StopSignals:
  """Within the block, SIGINT and SIGTERM ask the loop to stop at its next step
  boundary (`signum`); a second one stops at once. Only in the main thread (where
  Python runs signal handlers); the previous handlers come back at the end."""

  def __enter__(self):
    self.signum, self.previous = None, {}
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self.previous[signum] = signal.signal(signum, self._request)
    return self

  def _request(self, signum, frame):
    if self.signum is not None:
      raise KeyboardInterrupt
    self.signum = signum
    log.warning("%s: stopping after this step (send it again to stop at once)",
                signal.Signals(signum).name)

  def __exit__(self, *exc):
    for signum, handler in self.previous.items():
      signal.signal(signum, handler)


@contextlib.contextmanager
def deferred():
  """SIGINT and SIGTERM wait for the end of the block, then act as they would have:
  for work that must not stop halfway, such as opening orbax's checkpoint managers,
  whose threads a stop in between left running at exit (an abort: "FATAL: exception
  not rethrown", seen with SIGTERM at start-up). Only in the main thread."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  caught = []
  previous = {signum: signal.signal(signum, lambda signum, frame: caught.append(signum))
              for signum in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    if caught:
      signal.raise_signal(caught[0])  # to the handler it would have met
