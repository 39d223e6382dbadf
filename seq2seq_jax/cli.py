"""What the command-line entry points share: one-line errors and config flag parsing.

Every CLI (`main`, `sweep`, `translate`, `average`, `data`) ends an expected failure with
`fail`: one `error: ...` line on stderr and a non-zero exit. `--verbose`, or
SEQ2SEQ_JAX_VERBOSE=1 in the environment (which also reaches a sweep's members),
prints the traceback above it.
"""

import errno
import logging
import os
from pathlib import Path
import select
import signal
import sys
import threading
import time
import traceback

from absl import flags

VERBOSE_ENV = "SEQ2SEQ_JAX_VERBOSE"
flags.DEFINE_bool("verbose", False, "Print the traceback above an error line (also: "
                  f"{VERBOSE_ENV}=1).")
_CONFIG_HELP = flags.DEFINE_bool("config_help", False, "Print every field of --config (default: "
                                 "configs/default.py) with its value and meaning, and exit.")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.py"
HELP_FLAGS = ("--help", "-h", "--helpshort", "--helpfull")


def exit_on_help(argv) -> None:
  """`--help`: the entry point's docstring and flags (absl's own --help belongs to
  absl.app, which the CLIs do not use), exit 0."""
  if not any(a in HELP_FLAGS for a in argv[1:]):
    return
  signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--help | head` ends quietly
  main = sys.modules["__main__"]
  print((main.__doc__ or "").strip() + "\n")
  print("flags:")
  for module in ("__main__", __name__):
    text = flags.FLAGS.module_help(module)
    print("\n".join(ln for ln in text.splitlines() if ln.startswith(" ")))  # not "module:"
  if "config" in flags.FLAGS:
    print("\nConfig fields: --config_help (with --config=FILE, that config's values).")
  sys.exit(0)


def exit_on_config_help(config) -> None:
  """`--config_help`: every field of `config` (or the default's) and its comment, exit 0."""
  if not _CONFIG_HELP.value:
    return
  from seq2seq_jax import config_schema, config_utils
  if config is None:
    config = config_utils.load_module(DEFAULT_CONFIG).get_config()
  try:
    print(config_schema.describe(config))
  except ValueError as e:  # an unknown field or a wrong type in --config
    sys.exit(f"error: {e}")
  sys.exit(0)


def verbose() -> bool:
  """Read from the command line itself: a flag error comes before absl has parsed it."""
  on_command_line = any(a in ("--verbose", "--verbose=true", "--verbose=1")
                        for a in sys.argv[1:])
  return on_command_line or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def fail(message, code: int = 2) -> None:
  """Exits with `error: MESSAGE` on one line (the exception being handled, if any,
  printed above it with `--verbose`)."""
  if verbose() and sys.exc_info()[0] is not None:
    traceback.print_exc()
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(code)


def os_error_line(e: BaseException) -> str:
  """An error's line; a bare OS error on a path (`[Errno 21] Is a directory: 'W/x'`)
  as that path, what is wrong with it and what to do."""
  if not (isinstance(e, OSError) and e.filename and e.strerror and str(e).startswith("[Errno")):
    return str(e)
  path, what = Path(e.filename), e.strerror
  if e.errno == errno.ENOTDIR:  # a file where a directory of the path should be
    path = next((p for p in path.parents if p.exists() and not p.is_dir()), path)
    what = "a file where the run needs a directory"
  return f"{path}: {what}: the run cannot use it there; move it away, or use another --workdir"


class Terminated(KeyboardInterrupt):
  """SIGTERM outside the training loop's own handler (`training.signals.StopSignals`)."""


def interrupt_on_sigterm(grace: bool = True) -> None:
  """SIGTERM raises `Terminated` (Python's default for it is to die without a word),
  so that a CLI stopped anywhere says so in one line, as it does for Ctrl-C; with
  `grace`, a stop that cannot be honoured ends the process (`watch_stop_signals`)."""
  def raise_terminated(signum, frame):
    raise Terminated
  signal.signal(signal.SIGTERM, raise_terminated)
  if grace:
    watch_stop_signals()


STOP_GRACE_ENV, STOP_GRACE_S = "SEQ2SEQ_JAX_STOP_GRACE_S", 120.0


def watch_stop_signals() -> None:
  """Ends the process STOP_GRACE_S seconds after a SIGINT or SIGTERM that it has not
  acted on (env SEQ2SEQ_JAX_STOP_GRACE_S, 0 for never), 2 s after a second one, with
  the line and exit code of a stop. Python runs its signal handlers in the main thread
  between bytecodes, so a main thread inside a device call that does not return (one
  decoding batch of a very long sentence, a hung collective) never sees the signal:
  this thread learns of it from the wakeup file descriptor, which the C-level handler
  writes at once. Ending there loses nothing that a kill -9 would not (files are
  written whole)."""
  grace = float(os.environ.get(STOP_GRACE_ENV, STOP_GRACE_S))
  if grace <= 0 or threading.current_thread() is not threading.main_thread():
    return
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)  # the C handler must never block on it
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

  def watch():
    stops, deadline = [], None
    while deadline is None or time.monotonic() < deadline:
      wait = None if deadline is None else deadline - time.monotonic()
      if not select.select([read_fd], [], [], wait)[0]:
        continue
      new = [s for s in os.read(read_fd, 64) if s in (signal.SIGINT, signal.SIGTERM)]
      if new and not stops:
        started, deadline = time.monotonic(), time.monotonic() + grace
      stops += new
      if new and len(stops) > 1:  # "a second one stops at once"
        deadline = min(deadline, time.monotonic() + 2.0)
    print(f"error: stopped by {signal.Signals(stops[0]).name}: the run had not stopped "
          f"{time.monotonic() - started:.0f} s after the signal (its main thread was inside a "
          "device call that did not return), so the process ended there; files are written "
          "whole: the same command resumes from the last checkpoint "
          f"({STOP_GRACE_ENV} sets the wait)", file=sys.stderr, flush=True)
    os._exit(128 + stops[0])

  threading.Thread(target=watch, name="stop-watchdog", daemon=True).start()


def fail_interrupted(e: KeyboardInterrupt, where: str) -> None:
  """Ends a CLI that a Ctrl-C or SIGTERM reached: exit 130 or 143 with one line. The
  training loop's own stop (`training.signals.RunInterrupted`) brings its message and code."""
  if getattr(e, "exit_code", None) is not None:
    fail(str(e), e.exit_code)
  name, code = ("SIGTERM", 143) if isinstance(e, Terminated) else ("SIGINT", 130)
  fail(f"stopped by {name} {where}", code)


def _flag_error(message: str) -> str:
  """absl's message for a bad flag: its first line, and the exception at the end of
  an embedded traceback (a config file's own error), which is the reason."""
  lines = [ln for ln in message.splitlines() if ln.strip()]
  if len(lines) > 1 and any(ln.startswith("Traceback") for ln in lines):
    return f"{lines[0].rstrip(':')}: {lines[-1].strip()}"
  return lines[0] if lines else message


def _config_file(argv) -> str | None:
  """The file of `--config=FILE[:ARG]` on the command line, as given."""
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1].split(":")[0]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1].split(":")[0]
  return None


def config_file_error(e: BaseException, path: str | None) -> str | None:
  """`e` as one line naming the config file's line, if `e` came from that file's own
  code (its syntax, `get_config()`, `get_sweep()`); None if it did not."""
  if not path:
    return None
  target = Path(path).resolve()
  if isinstance(e, SyntaxError) and e.filename and Path(e.filename).resolve() == target:
    return f"--config={path}: line {e.lineno}: {e.msg}"
  frames = [f for f in traceback.extract_tb(e.__traceback__)
            if Path(f.filename).resolve() == target]
  if not frames:
    return None
  return f"--config={path}: line {frames[-1].lineno} raised {type(e).__name__}: {e}"


def parse_flags(argv, config_flag):
  """Parses the flags; returns the config, or exits 2 with one line naming the problem
  (0 after `--help` or `--config_help`)."""
  exit_on_help(argv)
  path = _config_file(argv)
  if path and not Path(path).is_file():  # checked first: an override would meet it as a traceback
    fail(f"--config={path}: no such file (a config is a Python file, e.g. configs/default.py)")
  try:
    flags.FLAGS(argv)
    config = config_flag.value
    if config is not None:
      config.keys()  # a config file that failed to load raises here (ml_collections defers it)
  except Exception as e:  # noqa: BLE001  the config file is user code: any error in it is one line
    in_file = config_file_error(e, path)
    if in_file is not None:
      fail(in_file)
    if isinstance(e, flags.Error):
      fail(_flag_error(str(e)))
    if isinstance(e, AttributeError) and "attribute 'get_config'" in str(e):
      fail(f"--config={path}: the file defines no get_config() (see configs/default.py)")
    if isinstance(e, (AttributeError, KeyError)):  # an unknown field, with ml_collections' hint
      hint = str(e)
      if len(hint) > 1 and hint[0] == hint[-1] and hint[0] in "'\"":  # KeyError's repr quotes
        hint = hint[1:-1]
      hint = hint.replace("\\n", " ").replace("\\'", "'")
      fail(f"unknown config field in {[a for a in argv[1:] if a.startswith('--config.')]}: "
           + hint)
    if isinstance(e, (OSError, ValueError, TypeError)):
      fail(e)
    raise
  exit_on_config_help(config)
  if config is None or not flags.FLAGS.workdir:
    fail("--config and --workdir are required (--help lists the flags)")
  return config


def parse_workdir_flags(argv, workdir_flag, level: int) -> None:
  """The start of the CLIs over a trained workdir (`translate`, `average`): `--help`,
  the flags (one line when bad), `--workdir` required, log lines of `level` and up
  without a prefix, SIGTERM like Ctrl-C."""
  exit_on_help(argv)
  try:
    flags.FLAGS(argv)
  except flags.Error as e:
    fail(_flag_error(str(e)))
  if not workdir_flag.value:
    fail("--workdir is required (--help lists the flags)")
  # force: a library may have configured the root logger already ("WARNING:name:" lines)
  logging.basicConfig(level=level, format="%(message)s", force=True)
  logging.getLogger("absl").setLevel(logging.WARNING)
  interrupt_on_sigterm()


def start_processes() -> None:
  """`jax.distributed` from the `--coordinator_address/--num_processes/--process_id`
  flags or the launcher's environment (`parallel.initialize`); one line on failure."""
  from seq2seq_jax import parallel  # imports jax: not needed to print an error
  f = flags.FLAGS
  try:
    parallel.initialize(f.coordinator_address, f.num_processes, f.process_id)
  except (ValueError, RuntimeError) as e:  # RuntimeError: XLA's, e.g. an unreachable coordinator
    fail(f"could not start the run's processes: {str(e).splitlines()[0]}")
