"""A process that encodes shards for `data.prepare` (argv: a JSON list of jobs)."""

import json
import signal
import sys

from seq2seq_jax.data import prepare


def main() -> None:
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
  for job in json.loads(sys.argv[1]):
    prepare.encode_shard(job)


if __name__ == "__main__":
  main()
