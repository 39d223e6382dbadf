"""Every config field, its type, its default and its meaning: the one place.

A config file builds an `ml_collections.ConfigDict` (from `config_dict()`, the
defaults, as `configs/default.py:base_config` does), the command line overrides
its fields, and the entry points turn it into the typed, frozen `Config` with
`build`, once. The code below them reads attributes (`config.train.batch_size`),
never `.get(field, default)`: a field's default is written here and nowhere else.

`build(saved, saved=True)` is also the only place that reads an older workdir's
`config.json` in today's field meanings (`migrate`). `--config_help` prints the
`help` of every field (`describe`). Pure Python: a config file that imports this
loads in milliseconds.
"""

import dataclasses
import logging
import typing

import ml_collections

from seq2seq_jax import files

log = logging.getLogger(__name__)

_NO_ABSENT = object()


def _field(default, help: str, absent=_NO_ABSENT):  # noqa: A002 (the field's help text)
  """A field with its default and `help`; `absent` is the value a run saved
  before the field existed gets, where that is not `default` (what it did)."""
  metadata = {"help": help}
  if absent is not _NO_ABSENT:
    metadata["absent"] = absent
  return dataclasses.field(default=default, metadata=metadata)


def _section(cls, help: str):  # noqa: A002
  return dataclasses.field(default_factory=cls, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str = _field("num2words_en_de", "num2words_en_de | copy | reverse | sort | addition | "
                     "debian:de-en | debian:en-es | tsv:PATH | tfds:NAME[/CONFIG]")
  max_number: int = _field(99_999, "num2words_en_de: every number in [0, max_number]")
  number_split: str = _field(
      "by_length", "num2words_en_de: by_length (dev/test stratified by source length, small "
      "numbers repeated in training) | hash (every number once, split by hash: runs before it)",
      absent="hash")
  train_size: int = _field(20_000, "generated tasks (copy, reverse, sort, addition)")
  dev_size: int = _field(1000, "pairs held out for evaluation during training")
  test_size: int = _field(1000, "pairs held out for the final evaluation")
  subword_alpha: float = _field(0.0, "sentencepiece unigram: draw each training pair's "
                                "segmentation anew from the subword_nbest best, P(x)^alpha "
                                "(data/sampling.py; Kudo 2018: 0.1); 0 = the best one always",
                                absent=0.0)
  subword_nbest: int = _field(64, "subword_alpha: the best segmentations drawn from", absent=64)
  dev_path: str = _field("", "a TSV corpus's own dev set (a TSV file, .gz/.xz/.bz2 allowed): "
                         "used as given, dev_size unused; training pairs whose source is in "
                         "it are dropped (counted); several, comma-separated: the first drives "
                         "best/ and early stopping, each other one is evaluated beside it as "
                         "the split dev-NAME (its file name up to the first dot); empty = "
                         "dev_size pairs held out by hash",
                         absent="")
  test_path: str = _field("", "the same for the test set", absent="")
  seed: int = _field(0, "generated tasks: which sequences")
  num_symbols: int = _field(10, "copy / reverse / sort: alphabet size")
  min_length: int = _field(3, "copy / reverse / sort: shortest sequence")
  max_length: int = _field(10, "copy / reverse / sort: longest sequence")
  max_digits: int = _field(3, "addition")
  data_dir: str = _field("~/tensorflow_datasets", "tfds:NAME datasets")
  download: bool = _field(True, "tfds: may download (fails within seconds when offline)")
  tokenizer: str = _field("", "'' = the dataset's own; word | char | sentencepiece")
  vocab_size: int = _field(0, "word: keep the N most frequent (0 = all); sentencepiece: "
                           "model size")
  spm_model_type: str = _field("unigram", "unigram | bpe")
  spm_input_sentence_size: int = _field(
      1_000_000, "sentencepiece: trained on this many training pairs, drawn with a fixed "
      "seed (0 = all of them)", absent=0)
  bucket_boundaries: tuple = _field((), "e.g. (10, 20, 40): length buckets, one padded "
                                    "shape each")
  max_src_len: int = _field(
      256, "training pairs with more source tokens are dropped and counted before batching "
      "(one stray 5,000-token line would pad every batch to it), dev and test sources cut to "
      "it for evaluation (counted; references stay whole); 0 = no limit", absent=0)
  max_tgt_len: int = _field(256, "the same for targets (<eos> included)", absent=0)
  max_dropped_fraction: float = _field(
      0.01, "more training pairs than this share over max_src_len / max_tgt_len stops the run "
      "with an error (a tokenizer gone wrong); 1.0 = drop any number with a warning",
      absent=1.0)
  joint_vocab: bool = _field(False, "one vocabulary of both sides (model.share_embeddings "
                             "needs it)")


@dataclasses.dataclass(frozen=True)
class Model:
  family: str = _field("rnn", "rnn | transformer")
  # rnn (seq2seq_jax/models/rnn/config.py)
  cell: str = _field("lstm", "rnn: rnn | lstm | gru | ln_lstm")
  attention: str = _field("general", "rnn: none | dot | general | concat | additive | "
                          "scaled_dot")
  embed_dim: int = _field(64, "rnn: source and target embedding size")
  hidden_dim: int = _field(256, "rnn: cell state size of encoder and decoder")
  num_layers: int = _field(1, "rnn: stacked cells in encoder and decoder")
  bidirectional: bool = _field(True, "rnn: the encoder reads both ways (Bahdanau 2015)")
  reverse_source: bool = _field(False, "rnn: feed the source backwards (Sutskever 2014)")
  input_feeding: bool = _field(True, "rnn: the attentional state is an input of the next "
                               "step (Luong 2015)")
  context_every_step: bool = _field(False, "rnn: the encoder summary is an input of every "
                                    "step (Cho 2014)")
  decoder_init: str = _field("last", "rnn: last (h only) | last_state (h and c) | learned | "
                             "zero")
  attention_dim: int = _field(0, "rnn: concat / additive score size; 0 = hidden_dim")
  dropout: float = _field(0.0, "on embeddings and between layers (the Transformer: residuals "
                          "too)")
  dtype: str = _field("float32", "float32 | bfloat16")
  predictions: str = _field("argmax", "argmax | sample: what scheduled sampling feeds back")
  unroll: int = _field(1, "rnn: jax.lax.scan unroll of every time loop (speed only)")
  # transformer (seq2seq_jax/models/transformer/config.py)
  d_model: int = _field(256, "transformer: width of every layer")
  num_heads: int = _field(4, "transformer: attention heads (d_model must divide by it)")
  ff_dim: int = _field(1024, "transformer: feed-forward inner size")
  encoder_layers: int = _field(3, "transformer: encoder blocks")
  decoder_layers: int = _field(3, "transformer: decoder blocks")
  attention_dropout: float = _field(0.0, "transformer: on attention weights")
  norm: str = _field("post", "transformer: post (the paper) | pre")
  positions: str = _field("sinusoidal", "transformer: sinusoidal | learned")
  max_len: int = _field(512, "transformer: longest sequence of learned positions")
  share_embeddings: bool = _field(False, "transformer: one embedding of source and target "
                                  "(needs dataset.joint_vocab)")
  tie_output: bool = _field(False, "transformer: output projection = target embedding "
                            "transposed")


@dataclasses.dataclass(frozen=True)
class TeacherForcing:
  schedule: str = _field("constant", "constant | linear | exponential | inverse_sigmoid | step")
  ratio: float = _field(1.0, "constant: the share of gold tokens fed back")
  k: float = _field(1.0, "linear: max(eps_min, k - c*i); exponential: k**i; inverse_sigmoid: "
                    "k / (k + exp(i / k))")
  c: float = _field(1e-4, "linear")
  eps_min: float = _field(0.0, "linear")
  steps: int = _field(1000, "step: teacher forcing before this step, free-running after")


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
  patience: int = _field(0, "dev evaluations in a row without an improvement before "
                         "stopping; 0 = train num_steps")
  metric: str = _field("bleu", "bleu | chrf | exact_match (higher is better) | loss | ter "
                       "(lower)")
  min_delta: float = _field(0.0, "the least change that counts as an improvement")


@dataclasses.dataclass(frozen=True)
class Train:
  num_steps: int = _field(3000, "training steps (updates)")
  batch_size: int = _field(64, "sentence pairs per step (per micro-batch with "
                           "grad_accum_steps), over all devices")
  batch_tokens: int = _field(0, "instead of batch_size: as many pairs as keep pairs x width "
                             "(the length bucket's, the wider side, padding included) within "
                             "this many tokens, over all devices (fairseq --max-tokens); "
                             "0 = batch_size sentences", absent=0)
  grad_accum_steps: int = _field(1, "micro-batches of batch_size (or batch_tokens) whose "
                                 "gradients make one update, normalised over the whole update "
                                 "(fairseq --update-freq); steps count updates", absent=1)
  optimizer: str = _field("adam", "adam | adamw | adafactor | sgd (training/optim.py)")
  learning_rate: float = _field(3e-3, "the peak with a warmup schedule")
  lr_schedule: str = _field("constant", "constant | rsqrt | cosine | halving | plateau "
                            "(training/optim.py)")
  warmup_steps: int = _field(0, "rsqrt, cosine: linear warmup steps")
  lr_halve_after: int = _field(0, "halving: halved at lr_halve_after + k * lr_halve_every, "
                               "k >= 1")
  lr_halve_every: int = _field(1000, "halving: the interval")
  plateau_factor: float = _field(0.5, "plateau: the rate is multiplied by this when dev "
                                 "early_stopping.metric has not improved (by min_delta) for "
                                 "plateau_patience evaluations", absent=0.5)
  plateau_patience: int = _field(5, "plateau: evaluations without an improvement", absent=5)
  adam_b1: float = _field(0.9, "adam, adamw: first-moment decay (the Transformer paper: "
                          "0.9, 0.98, 1e-9)")
  adam_b2: float = _field(0.999, "adam, adamw: second-moment decay")
  adam_eps: float = _field(1e-8, "adam, adamw: epsilon")
  weight_decay: float = _field(0.0, "adamw, adafactor: decoupled weight decay of the matrices "
                               "(adamw's update adds lr * weight_decay * param, adafactor's "
                               "weight_decay * param); 0 = off", absent=0.0)
  clip_norm: float = _field(5.0, "global gradient norm clipping; 0 = off")
  label_smoothing: float = _field(0.0, "in [0, 1)")
  ema_decay: float = _field(0.0, "an exponential moving average of the weights, "
                            "decay * ema + (1 - decay) * params after each update, kept in "
                            "the checkpoints: what the run evaluates and translate serves "
                            "(Marian's exponential smoothing; e.g. 0.9999); 0 = off", absent=0.0)
  loss_normalization: str = _field(
      "sentences", "sentences: summed token loss / sentences (the RNN recipe: with clip_norm "
      "5 the clipping is active, as in tensorflow/nmt, OpenNMT-py, JoeyNMT) | tokens: per "
      "token")
  log_every_steps: int = _field(100, "a train line in metrics.jsonl and the log")
  checkpoint_every_steps: int = _field(500, "a multiple of log_every_steps (exact resume)")
  keep_checkpoints: int = _field(3, "the last N, plus the best by dev BLEU")
  teacher_forcing: TeacherForcing = _section(TeacherForcing, "scheduled sampling "
                                             "(Bengio 2015), decided per token")
  early_stopping: EarlyStopping = _section(EarlyStopping, "stop after `patience` dev "
                                           "evaluations without an improvement")
  init_from: str = _field("", "warm start: the params of another run's checkpoint (WORKDIR, "
                          "WORKDIR:best or WORKDIR:last), a fresh optimizer and step 0; its "
                          "vocabularies must match")


@dataclasses.dataclass(frozen=True)
class Eval:
  every_steps: int = _field(500, "dev evaluation interval (a multiple of log_every_steps)")
  beam_size: int = _field(1, "1 = greedy, else beam search")
  length_penalty: float = _field(0.6, "beam search: GNMT alpha; 0 = off")
  length_penalty_type: str = _field("gnmt", "gnmt ((5+len)/6)**alpha | average len**alpha")
  max_len_a: float = _field(5.0, "at most floor(a * source length + b) output tokens")
  max_len_b: int = _field(10, "(number words -> characters: up to 5 characters a word)")
  report_greedy: bool = _field(False, "with a beam, also greedy_bleu / greedy_chrf / ...")
  batch_size: int = _field(500, "sentences decoded at once")
  num_attention_plots: int = _field(3, "fixed dev sentences plotted at every evaluation")
  max_examples: int = _field(0, "evaluate on the first N dev pairs; 0 = all")
  min_len: int = _field(0, "no <eos> before this many output tokens", absent=0)
  no_repeat_ngram: int = _field(0, "no n-gram of this many tokens twice in an output; 0 = off",
                                absent=0)
  repetition_penalty: float = _field(1.0, "log-probs of tokens already output times this "
                                     "(>= 1; 1 = off)", absent=1.0)
  top_p: float = _field(1.0, "sampling (translate --temperature): nucleus p; 1 = off",
                        absent=1.0)


@dataclasses.dataclass(frozen=True)
class Mesh:
  """Devices (seq2seq_jax/parallel.py). Not part of the experiment: a run may
  resume on another mesh."""
  data: int = _field(0, "devices the batch is split over; 0 = every device "
                     "(train.batch_size stays the global batch)")
  members: int = _field(1, "devices a stacked sweep's members are spread over")


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = _field(0, "initialisation, dropout, data order and teacher-forcing coins")
  dataset: Dataset = _section(Dataset, "the corpus and its vocabularies")
  model: Model = _section(Model, "the model: one section for both families")
  train: Train = _section(Train, "the optimisation")
  eval: Eval = _section(Eval, "dev/test decoding")
  mesh: Mesh = _section(Mesh, "devices")


def _is_section(f: dataclasses.Field) -> bool:
  return dataclasses.is_dataclass(f.type) if isinstance(f.type, type) else False


def as_dict(section) -> dict:
  """A section (or the `Config`) as plain nested dicts and lists: `config.json`'s form.
  A ConfigDict or a mapping (a section a test writes by hand) as a dict too."""
  if not dataclasses.is_dataclass(section):
    return section.to_dict() if hasattr(section, "to_dict") else dict(section)

  def plain(value):
    return list(value) if isinstance(value, tuple) else value
  return {f.name: as_dict(getattr(section, f.name)) if _is_section(f)
          else plain(getattr(section, f.name)) for f in dataclasses.fields(section)}


def to_config_dict(section) -> ml_collections.ConfigDict:
  """A `Config` (or section) as the ConfigDict a config file builds."""
  return ml_collections.ConfigDict({
      f.name: to_config_dict(getattr(section, f.name)) if _is_section(f)
      else getattr(section, f.name) for f in dataclasses.fields(section)})


def config_dict() -> ml_collections.ConfigDict:
  """Every field at its default: what a config file starts from."""
  return to_config_dict(Config())


def _typed(path: str, value, annotation):
  """`value` as the field's type: ints for a float field become floats, lists
  for a tuple field tuples; anything else of another type is an error."""
  if annotation is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if annotation is tuple and isinstance(value, list):
    return tuple(value)
  if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
    raise ValueError(f"config field {path}={value!r} must be {annotation.__name__}")
  return value


def _build(cls, given, prefix: str, saved: bool):
  if hasattr(given, "to_dict"):
    given = given.to_dict()
  if not isinstance(given, typing.Mapping):
    raise ValueError(f"config field {prefix.rstrip('.')} must be a section (fields: "
                     f"{', '.join(f.name for f in dataclasses.fields(cls))}), got {given!r}")
  known = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(given) - set(known))
  if unknown:
    raise ValueError(f"config field {prefix}{unknown[0]} is not known; valid fields of "
                     f"{prefix.rstrip('.') or 'the config'}: {', '.join(known)}")
  values = {}
  for name, f in known.items():
    path = prefix + name
    if _is_section(f):
      values[name] = _build(f.type, given.get(name, {}), path + ".", saved)
    elif name in given:
      values[name] = _typed(path, given[name], f.type)
    elif saved and "absent" in f.metadata:
      values[name] = f.metadata["absent"]
  return cls(**values)


def migrate(saved: dict) -> dict:
  """A `config.json` written by an older version, in today's field meanings.

  A run trained before the learning-parity fix has no `train.loss_normalization`;
  its `model.decoder_init="last"` handed the decoder the encoder's whole final
  state, cell state included, which is `"last_state"` now. (A field added since
  the run gets its `absent` value in `build`.)
  """
  saved = {k: dict(v) if isinstance(v, dict) else v for k, v in saved.items()}
  if ("loss_normalization" not in saved.get("train", {})
      and saved.get("model", {}).get("decoder_init") == "last"):
    saved["model"]["decoder_init"] = "last_state"
    log.info("a config from before the parity fix: decoder_init 'last' read as 'last_state'")
  return saved


def build(config, saved: bool = False) -> Config:
  """The typed, frozen `Config` of a ConfigDict or dict (a `Config` as it is).

  A field the config lacks gets its default, or, with `saved=True` (an older
  workdir's `config.json`), the value that does what the run did then. An unknown
  field or a value of the wrong type raises ValueError naming the field.
  """
  if isinstance(config, Config):
    return config
  if saved:
    config = migrate(config.to_dict() if hasattr(config, "to_dict") else config)
  return _build(Config, config, "", saved)


def _absent_fields(cls, prefix="") -> set:
  out = set()
  for f in dataclasses.fields(cls):
    if _is_section(f):
      out |= _absent_fields(f.type, prefix + f.name + ".")
    elif "absent" in f.metadata:
      out.add(prefix + f.name)
  return out


def read_saved(path) -> Config:
  """A workdir's `config.json` as a `Config`, in today's field meanings."""
  return build(files.read_json(path, keys=()), saved=True)


def fields_help() -> dict[str, str]:
  """{"model.cell": "rnn: rnn | lstm | gru | ln_lstm", ...}: every field's help."""
  out = {}

  def visit(cls, prefix):
    for f in dataclasses.fields(cls):
      if _is_section(f):
        visit(f.type, prefix + f.name + ".")
      else:
        out[prefix + f.name] = f.metadata["help"]
  visit(Config, "")
  return out


def describe(config) -> str:
  """`--config_help`: a line a field, `model.cell = 'lstm'  # rnn: rnn | lstm | gru | ln_lstm`,
  with `config`'s values (a ConfigDict, dict or `Config`)."""
  values = as_dict(build(config))
  rows = []
  for name, text in fields_help().items():
    node = values
    for part in name.split("."):
      node = node[part]
    value = tuple(node) if isinstance(node, list) else node
    rows.append(f"{name} = {value!r}  # {text}")
  return "\n".join(rows)


# The annotations are classes, not strings: `_is_section` and `_typed` read them.
assert all(isinstance(f.type, type) for c in (Config, Dataset, Model, Train, Eval, Mesh)
           for f in dataclasses.fields(c)), "config_schema: annotate fields with classes"


# The fields whose absence from a saved config.json has a meaning (their `absent`).
ABSENT = _absent_fields(Config)
