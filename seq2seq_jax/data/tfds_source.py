"""`tfds:NAME[/CONFIG]`: translation datasets from TensorFlow Datasets.

Prepared datasets are read through `tfds.data_source` (array_record), which
needs no TensorFlow; preparing (downloading) one needs a network and, for most
translation builders, TensorFlow. Offline, a missing dataset fails within
seconds with what to do, instead of TFDS's minutes of retries.
"""

from pathlib import Path
import socket

from seq2seq_jax.data import debian, synthetic

PROBE_HOST = ("storage.googleapis.com", 443)  # TFDS's own mirror
SPLIT_NAMES = {"train": ("train",), "dev": ("validation", "dev"), "test": ("test",)}


class DatasetUnavailable(OSError):
  """A tfds dataset that cannot be had here (offline, unknown, not prepared):
  an OSError, so the entry points print it as one line."""


def _hint(name: str, data_dir: str) -> str:
  offline = ", ".join([*synthetic.TASKS, *(f"debian:{p}" for p in debian.CORPORA)])
  return (f"Prepare it on a machine that is online (pip install tensorflow-datasets "
          f"tensorflow-cpu; python -c \"import tensorflow_datasets as tfds; "
          f"tfds.builder('{name}', data_dir='{data_dir}', file_format='array_record')"
          f".download_and_prepare()\") and copy {data_dir} here, or use a dataset that works "
          f"offline: {offline}, tsv:PATH")


def _online(timeout: float = 3.0) -> bool:
  try:
    socket.create_connection(PROBE_HOST, timeout=timeout).close()
    return True
  except OSError:
    return False


def load_pairs(name: str, data_dir: str, download: bool) -> dict:
  """`{split: [(source, target)]}` of TFDS translation dataset `name`."""
  # Imported here: tfds adds 0.5 s to every start-up (measured) and only tfds: datasets
  # need it; its absence is then a clear error.
  try:
    import tensorflow_datasets as tfds
    import tensorflow_datasets.translate  # noqa: F401  (registers the builders without TF)
  except ImportError as e:
    raise DatasetUnavailable(f"tfds:{name} needs tensorflow-datasets "
                             f"(pip install tensorflow-datasets): {e}") from None
  data_dir = str(Path(data_dir).expanduser())
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except Exception as e:  # unknown name or config
    raise DatasetUnavailable(f"tfds:{name}: {str(e).splitlines()[0]}") from None
  if not (Path(builder.data_dir) / "dataset_info.json").exists():
    if not download:
      raise DatasetUnavailable(f"tfds:{name} is not prepared in {data_dir} and "
                               f"dataset.download is False. " + _hint(name, data_dir))
    if not _online():
      raise DatasetUnavailable(f"tfds:{name} is not prepared in {data_dir} and "
                               f"{PROBE_HOST[0]} cannot be reached (offline). "
                               + _hint(name, data_dir))
    builder.download_and_prepare()
  src_key, tgt_key = builder.info.supervised_keys
  source = tfds.data_source(name, data_dir=data_dir)
  out = {}
  for split, candidates in SPLIT_NAMES.items():
    found = next((c for c in candidates if c in source), None)
    if found is None:
      raise DatasetUnavailable(f"tfds:{name} has no {'/'.join(candidates)} split")
    out[split] = [(_text(ex[src_key]), _text(ex[tgt_key])) for ex in source[found]]
  return out


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
