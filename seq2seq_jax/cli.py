"""What the command-line entry points share: one-line errors and config flag parsing."""

from pathlib import Path
import sys

from absl import flags


def fail(message, code: int = 2) -> None:
  """Exits with `error: MESSAGE` on one line."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(code)


def _flag_error(message: str) -> str:
  """absl's message for a bad flag: its first line, and the exception at the end of
  an embedded traceback (a config file's own error), which is the reason."""
  lines = [ln for ln in message.splitlines() if ln.strip()]
  if len(lines) > 1 and any(ln.startswith("Traceback") for ln in lines):
    return f"{lines[0].rstrip(':')}: {lines[-1].strip()}"
  return lines[0] if lines else message


def parse_flags(argv, config_flag):
  """Parses the flags; returns the config, or exits 2 with one line naming the problem."""
  try:
    flags.FLAGS(argv)
    config = config_flag.value
    if config is not None:
      config.keys()  # a config file that failed to load raises here (ml_collections defers it)
  except flags.Error as e:
    fail(_flag_error(str(e)))
  except (AttributeError, KeyError) as e:  # an unknown field, with ml_collections' hint
    hint = str(e)
    if len(hint) > 1 and hint[0] == hint[-1] and hint[0] in "'\"":  # KeyError's repr quotes
      hint = hint[1:-1]
    hint = hint.replace("\\n", " ").replace("\\'", "'")
    fail(f"unknown config field in {[a for a in argv[1:] if a.startswith('--config.')]}: "
         + hint)
  except (OSError, ValueError, TypeError) as e:
    path = flags.FLAGS["config"].serialize().split("=", 1)[-1].split(":")[0]
    if path and not Path(path).is_file():
      fail(f"--config={path}: no such file (a config is a Python file, e.g. configs/default.py)")
    fail(e)
  if config is None or not flags.FLAGS.workdir:
    fail("--config and --workdir are required")
  return config


def start_processes() -> None:
  """`jax.distributed` from the `--coordinator_address/--num_processes/--process_id`
  flags or the launcher's environment (`training.parallel.initialize`); one line on failure."""
  from seq2seq_jax.training import parallel  # imports jax: not needed to print an error
  f = flags.FLAGS
  try:
    parallel.initialize(f.coordinator_address, f.num_processes, f.process_id)
  except (ValueError, RuntimeError) as e:  # RuntimeError: XLA's, e.g. an unreachable coordinator
    fail(f"could not start the run's processes: {str(e).splitlines()[0]}")
