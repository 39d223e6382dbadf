"""Checking a whole config before any work starts: one `ValueError` naming the first bad field."""

from seq2seq_jax import config_schema, data, decoding, models
from seq2seq_jax.data import sources, synthetic
from seq2seq_jax.training import early_stopping, optim, schedules, step


def _int_field(config, field, least: int = 1, meaning: str = ""):
  """`config.<field>` if it is an int >= `least`; else a ValueError."""
  value = config
  for part in field.split("."):
    value = getattr(value, part)
  if isinstance(value, bool) or not isinstance(value, int) or value < least:
    kind = "a positive int" if least == 1 else f"an int >= {least}"
    raise ValueError(f"{field} must be {kind}{meaning}, got {value!r}")
  return value


# Counts and limits where 0 means "none" or "no limit", and the synthetic tasks' sizes.
_NON_NEGATIVE = {"seed": "", "dataset.seed": "", "dataset.max_src_len": " (0 = no limit)",
                 "dataset.max_tgt_len": " (0 = no limit)", "dataset.vocab_size": " (0 = all)",
                 "eval.max_examples": " (0 = none)", "eval.num_attention_plots": " (0 = none)",
                 "eval.max_len_b": "", "dataset.spm_input_sentence_size": " (0 = all)",
                 "train.batch_tokens": " (0 = train.batch_size sentences)"}
_SYNTHETIC = ("dataset.train_size", "dataset.num_symbols", "dataset.max_number",
              "dataset.max_digits", "dataset.min_length", "dataset.max_length")


def validate(config) -> config_schema.Config:
  """The typed config (`config_schema.build`) of a ConfigDict; raises ValueError
  naming the first bad field (and its valid choices)."""
  config = config_schema.build(config)
  if not data.is_dataset_name(config.dataset.name):
    raise ValueError(f"dataset.name={config.dataset.name!r} is not valid; valid datasets: "
                     f"{', '.join(data.dataset_names())}")
  if not config.dataset.name.startswith(sources.WITH_SPLIT_FILES):  # else checked when read
    data.split_files(config.dataset)  # refuses dev_path / test_path
  split = config.dataset.number_split
  if split not in synthetic.NUMBER_SPLITS:
    raise ValueError(f"dataset.number_split={split!r} is not valid; valid: "
                     f"{', '.join(synthetic.NUMBER_SPLITS)}")
  family_config = models.family_config(config.model, 8, 8)  # checks model.*
  if family_config.needs_joint_vocabulary and not config.dataset.joint_vocab:
    raise ValueError("model.share_embeddings needs one vocabulary for both sides: set "
                     "dataset.joint_vocab=True")
  schedules.teacher_forcing_from_config(config.train.teacher_forcing)  # checks the schedule
  optim.check(config.train)
  early_stopping.check(config.train)
  step.check_loss_normalization(config.train.loss_normalization)
  if not 0.0 <= config.train.label_smoothing < 1.0:
    raise ValueError(f"train.label_smoothing must be in [0, 1), got "
                     f"{config.train.label_smoothing!r}")
  for field in ("train.num_steps", "train.batch_size", "train.grad_accum_steps",
                "train.keep_checkpoints",
                "eval.batch_size", "dataset.dev_size", "dataset.test_size"):
    _int_field(config, field)
  log_every = _int_field(config, "train.log_every_steps")
  for field in ("train.checkpoint_every_steps", "eval.every_steps"):
    every = _int_field(config, field)
    if every % log_every:  # exact resume restarts at a logging boundary
      raise ValueError(f"{field}={every} must be a multiple of train.log_every_steps="
                       f"{log_every}")
  check_eval_decoding(config.eval)
  for field, meaning in _NON_NEGATIVE.items():
    _int_field(config, field, 0, meaning)
  for field in _SYNTHETIC:
    _int_field(config, field)
  low, high = config.dataset.min_length, config.dataset.max_length
  if low > high:
    raise ValueError(f"dataset.min_length={low} is larger than dataset.max_length={high}")
  alpha = config.dataset.subword_alpha
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
    raise ValueError(f"dataset.subword_alpha must be a number >= 0 (0 = off), got {alpha!r}")
  if alpha and (config.dataset.tokenizer not in ("", "sentencepiece")
                or config.dataset.spm_model_type != "unigram"):
    raise ValueError(f"dataset.subword_alpha={alpha} samples the segmentations of a "
                     "SentencePiece unigram model: set dataset.tokenizer=sentencepiece and "
                     "dataset.spm_model_type=unigram")
  _int_field(config, "dataset.subword_nbest", 2)
  dropped = config.dataset.max_dropped_fraction
  if isinstance(dropped, bool) or not isinstance(dropped, (int, float)) or not 0 <= dropped <= 1:
    raise ValueError(f"dataset.max_dropped_fraction must be a share in [0, 1], got {dropped!r}")
  bounds = config.dataset.bucket_boundaries
  if not isinstance(bounds, (tuple, list)) or not all(
      isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in bounds):
    raise ValueError(f"dataset.bucket_boundaries must be positive ints, e.g. (10, 20, 40), got "
                     f"{bounds!r}")
  for field, least in (("data", 0), ("members", 1)):
    value = getattr(config.mesh, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      raise ValueError(f"mesh.{field} must be an int >= {least} "
                       f"{'(0 = every device)' if least == 0 else ''}, got {value!r}")
  return config


def check_eval_decoding(cfg_eval) -> None:
  """The decoding fields of an `eval` section."""
  try:
    decoding.DecodeOptions.from_eval_config(cfg_eval)
  except (TypeError, ValueError) as e:
    raise ValueError(f"eval.{e}") from None
