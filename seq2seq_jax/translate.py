r"""Translates (or scores) sentences with a trained model from a training workdir.

    python -m seq2seq_jax.translate --workdir=DIR [--beam_size=5] [--nbest=3] \
        [--length_penalty=0.6] [--with_scores] [--input=F] [--output=F]
    python -m seq2seq_jax.translate --workdir=DIR --score < source-TAB-target lines

Reads one sentence a line from stdin or `--input`; writes one translation a
line (with `--nbest N`, N lines an input, best first; with `--with_scores`,
`score<TAB>translation`). `--score` prints the log-probability of each
`source<TAB>target` line's target (its `<eos>` included), one a line.
`--temperature T` samples instead of searching (`--nbest` samples an input).
"""

import logging
import os
from pathlib import Path
import sys

from absl import flags
import jax
import numpy as np

from seq2seq_jax import cli, config_schema, decoding, evaluate, files, parallel, plots
from seq2seq_jax.data.vocab import tokenize
from seq2seq_jax.tokens import UNK_ID
from seq2seq_jax.training import checkpoints
from seq2seq_jax.training.trained import load_model

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best",
                                  "best (by dev BLEU), last, a step number, average "
                                  "(python -m seq2seq_jax.average), or ema (best's moving "
                                  "average of the weights, train.ema_decay; with one, every "
                                  "name serves its average).")
_INPUT = flags.DEFINE_string("input", None, "Input file (UTF-8); stdin when not given.")
_OUTPUT = flags.DEFINE_string("output", None, "Output file; stdout when not given.")
_BEAM = flags.DEFINE_integer("beam_size", 5, "Beam width; 1 = greedy.")
_NBEST = flags.DEFINE_integer("nbest", 1, "Hypotheses written per input (<= beam_size).")
_ALPHA = flags.DEFINE_float("length_penalty", 0.6, "Length penalty alpha; 0 turns it off.")
_PENALTY_TYPE = flags.DEFINE_enum("length_penalty_type", "gnmt", ["gnmt", "average"],
                                  "gnmt: ((5+len)/6)**alpha; average: len**alpha.")
_MAX_LEN_A = flags.DEFINE_float("max_len_a", None, "At most floor(a * source length + b) "
                                "output tokens; default: the workdir's eval.max_len_a.")
_MAX_LEN_B = flags.DEFINE_integer("max_len_b", None, "Default: the workdir's eval.max_len_b.")
_WITH_SCORES = flags.DEFINE_bool("with_scores", False, "Write score<TAB>translation.")
_SCORE = flags.DEFINE_bool("score", False, "Print log p(target | source) of source<TAB>target "
                           "lines instead of translating.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "> 0: sample instead of beam search.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sampling: only the k most probable tokens.")
_TOP_P = flags.DEFINE_float("top_p", None, "Sampling: nucleus p, the most probable tokens "
                            "up to that probability (1: all); default: the workdir's eval.top_p.")
_MIN_LEN = flags.DEFINE_integer("min_len", None, "No <eos> before this many tokens; default: "
                                "the workdir's eval.min_len.")
_NO_REPEAT = flags.DEFINE_integer("no_repeat_ngram", None, "No n-gram of this many tokens "
                                  "twice in an output (0: off); default: the workdir's.")
_REPETITION = flags.DEFINE_float("repetition_penalty", None, "Log-probs of tokens already "
                                 "output times this (1: off); default: the workdir's.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Sentences a batch.")
_ATTENTION_DIR = flags.DEFINE_string("attention_dir", None,
                                     "Save an attention heatmap of each best output here.")
_MAX_PLOTS = flags.DEFINE_integer("max_attention_plots", 100, "At most this many heatmaps.")

log = logging.getLogger("seq2seq_jax.translate")


class TranslateError(ValueError):
  pass


def read_lines(path) -> list[str]:
  """Lines of `path` (stdin when None), UTF-8; a bad line is named."""
  raw = sys.stdin.buffer.read() if path is None else Path(path).read_bytes()
  name = "stdin" if path is None else path
  lines = []
  for number, line in enumerate(raw.split(b"\n"), 1):
    try:
      lines.append(line.decode("utf-8").rstrip("\r"))
    except UnicodeDecodeError as e:
      raise TranslateError(f"{name}:{number}: not UTF-8 ({e.reason} at byte {e.start})") \
          from None
  if lines and lines[-1] == "":
    lines.pop()  # the final newline
  return lines


def warn_unknown(src_vocab, lines: list[str], name: str, most: int = 10) -> int:
  """Warns of input tokens outside the source vocabulary (they become `<unk>` and are
  translated as such); returns how many lines have one."""
  stoi = getattr(src_vocab, "stoi", None)  # word / char vocabularies; sentencepiece: ids
  bad = 0
  for number, line in enumerate(lines, 1):
    if stoi is not None:
      unknown = [t for t in tokenize(line, src_vocab.kind) if t not in stoi]
    else:
      unknown = ["<unk>"] * src_vocab.encode(line).count(UNK_ID)
    if unknown:
      bad += 1
      if bad <= most:
        log.warning("%s:%d: not in the source vocabulary, translated as <unk>: %s", name,
                    number, " ".join(unknown))
  if bad > most:
    log.warning("%s: %d lines in all have tokens outside the source vocabulary", name, bad)
  return bad


def _pad(rows: list[list[int]], multiple: int = 8) -> np.ndarray:
  """Rows padded to a multiple of `multiple` (fewer shapes to compile)."""
  width = max(1, max(map(len, rows)))
  width = -(-width // multiple) * multiple
  out = np.zeros((len(rows), width), np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def _length_batches(lengths, batch_size):
  """Indices in batches of similar length (longest first); outputs go back in order."""
  order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
  return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _placed(src: np.ndarray, mesh):
  """A batch split over the mesh's data axis (rows padded to a multiple of it)."""
  return src if mesh is None else parallel.shard_rows([src], mesh)[0]


def translate(model, params, src_vocab, tgt_vocab, sentences, options: decoding.DecodeOptions,
              seed=0, batch_size=64, mesh=None):
  """`options.num_samples` (sampling) or `options.beam_size` translations of each
  sentence: a list (per sentence) of `(score, text, tokens, attention)`, best first.

  Decoded by `evaluate.decode_corpus` in batches of similar length. With a `mesh`
  (`params` placed on it) every batch is split over its data axis; a batch padded
  for it samples other random numbers than the unpadded one.
  """
  ids = [src_vocab.encode(s) for s in sentences]
  nbest = options.num_samples if options.temperature > 0 else options.beam_size
  # A sentence without tokens gets empty outputs and keeps its line.
  results = [[(0.0, "", np.zeros(0, np.int32), None)] * nbest if not r else None for r in ids]
  todo = [i for i, r in enumerate(ids) if r]
  if not todo:
    return results
  out = evaluate.decode_corpus(model, params, _pad([ids[i] for i in todo]), batch_size, options,
                               mesh=mesh, by_length=True, seed=seed)
  for row, i in enumerate(todo):
    results[i] = [(float(out.scores[row, n]), tgt_vocab.decode(out.tokens[row, n]),
                   out.tokens[row, n, :out.lengths[row, n]],
                   None if out.attention is None else
                   out.attention[row, n, :out.lengths[row, n], :len(ids[i])])
                  for n in range(nbest)]
  return results


def score(model, params, src_vocab, tgt_vocab, pairs, batch_size=64, mesh=None) -> list[float]:
  """log p(target + <eos> | source) of each `(source, target)` pair."""
  src_ids = [src_vocab.encode(s) for s, _ in pairs]
  tgt_ids = [tgt_vocab.encode(t, eos=True) for _, t in pairs]
  out = [0.0] * len(pairs)
  for idx in _length_batches([len(r) for r in src_ids], batch_size):
    _, per_sentence = decoding.forced_log_probs(
        model, params, _placed(_pad([src_ids[i] for i in idx]), mesh),
        _placed(_pad([tgt_ids[i] for i in idx]), mesh))
    per_sentence = parallel.to_host(per_sentence)
    for row, i in enumerate(idx):
      out[i] = float(per_sentence[row])
  return out


def _decode_options(config) -> decoding.DecodeOptions:
  """The flags' decoding options; the length limits default to the workdir's eval section."""
  sampling = _TEMPERATURE.value > 0  # else --temperature and --top_k are not used
  if _NBEST.value < 1 or (not sampling and _NBEST.value > _BEAM.value):
    raise TranslateError(f"--nbest must be in [1, --beam_size={_BEAM.value}], got "
                         f"{_NBEST.value}")
  overrides = dict(beam_size=_BEAM.value, length_penalty=_ALPHA.value,
                   length_penalty_type=_PENALTY_TYPE.value)
  if sampling:
    overrides.update(temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
                     num_samples=_NBEST.value)
  for name, flag in (("top_p", _TOP_P), ("min_len", _MIN_LEN),
                     ("no_repeat_ngram", _NO_REPEAT), ("repetition_penalty", _REPETITION)):
    if flag.value is not None:
      overrides[name] = flag.value
  if _MAX_LEN_A.value is not None:
    overrides["max_len_a"] = _MAX_LEN_A.value
  if _MAX_LEN_B.value is not None:
    overrides["max_len_b"] = _MAX_LEN_B.value
  try:
    return decoding.DecodeOptions.from_eval_config(config.eval, **overrides)
  except (TypeError, ValueError) as e:
    raise TranslateError(f"--{e}") from None


def _run() -> list[str]:
  config, model, params, src_vocab, tgt_vocab = load_model(_WORKDIR.value, _CHECKPOINT.value)
  # Every local device (the default mesh), whatever mesh the run trained on.
  mesh = parallel.make_mesh(config_schema.Mesh())
  params = jax.device_put(params, parallel.replicated(mesh))
  lines = read_lines(_INPUT.value)
  name = _INPUT.value or "stdin"
  if _SCORE.value:
    pairs = []
    for number, line in enumerate(lines, 1):
      parts = line.split("\t")
      if len(parts) != 2:
        raise TranslateError(f"{name}:{number}: --score needs source<TAB>target, found "
                             f"{len(parts) - 1} tabs")
      pairs.append(tuple(parts))
    return [f"{s:.6f}" for s in score(model, params, src_vocab, tgt_vocab, pairs,
                                      _BATCH.value, mesh)]
  for number, line in enumerate(lines, 1):
    if not line.strip():
      log.warning("%s:%d: empty line; its translation is empty too", name, number)
  warn_unknown(src_vocab, lines, name)
  options = _decode_options(config)
  results = translate(model, params, src_vocab, tgt_vocab, lines, options, seed=_SEED.value,
                      batch_size=_BATCH.value, mesh=mesh)
  if _ATTENTION_DIR.value:
    _plot(results, lines, src_vocab, tgt_vocab, Path(_ATTENTION_DIR.value),
          not model.has_attention)
  out = []
  for hyps in results:
    for s, text, _, _ in hyps[:_NBEST.value]:
      out.append(f"{s:.6f}\t{text}" if _WITH_SCORES.value else text)
  return out


def _plot(results, lines, src_vocab, tgt_vocab, directory: Path,
          model_has_no_attention: bool) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  for i, (hyps, line) in enumerate(zip(results, lines)):
    if i >= _MAX_PLOTS.value:
      break
    _, text, tokens, weights = hyps[0]
    if model_has_no_attention:
      log.warning("the model has no attention: no heatmaps")
      return
    if weights is None:  # an empty line
      continue
    src_tokens = src_vocab.tokens(src_vocab.encode(line))
    plots.plot_attention(weights, src_tokens, plots.output_tokens(tgt_vocab, tokens),
                         directory / f"{i + 1:05d}.png", title=text)


def main(argv) -> None:
  cli.parse_workdir_flags(argv, _WORKDIR, logging.WARNING)
  try:
    if _OUTPUT.value:  # before any decoding: a bad path must not cost the translations
      _check_output(Path(_OUTPUT.value))
    out = _run()
    text = "".join(line + "\n" for line in out)
    if _OUTPUT.value:  # the whole output or none
      files.write_atomically(Path(_OUTPUT.value), text)
  except KeyboardInterrupt as e:
    cli.fail_interrupted(e, "before the output was written (it is written whole or not at all)")
  except (TranslateError, checkpoints.CheckpointError, ValueError, OSError) as e:
    cli.fail(e)
  if not _OUTPUT.value:
    sys.stdout.write(text)


def _check_output(path: Path) -> None:
  if path.is_dir():
    raise TranslateError(f"--output={path} is a directory; give a file name")
  if not path.parent.is_dir():
    raise TranslateError(f"--output={path}: directory {path.parent} does not exist; "
                         "create it or choose another --output")
  if not os.access(path.parent, os.W_OK):
    raise TranslateError(f"--output={path}: directory {path.parent} is not writable")


if __name__ == "__main__":
  main(sys.argv)
