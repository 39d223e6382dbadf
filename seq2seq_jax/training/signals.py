"""Ctrl-C and SIGTERM in the training loop: a stop at the next step boundary."""

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
