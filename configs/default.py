"""The default experiment: English number words -> German, attention LSTM.

    python -m seq2seq_jax.main --config=configs/default.py --workdir=/tmp/num2words
    python -m seq2seq_jax.main --config=configs/default.py:quick --workdir=/tmp/quick

German puts the units before the tens ("forty-two" -> "zweiundvierzig"), so
the attention maps show the reordering. Source words, target characters.
"""

import ml_collections

from seq2seq_jax import config_utils


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict(dict(
      name="num2words_en_de",
      max_number=99_999,  # num2words_en_de: every number in [0, max_number]
      train_size=20_000,  # generated tasks (copy, reverse, sort, addition)
      dev_size=1000,
      test_size=1000,
      seed=0,  # generated tasks: which sequences
      num_symbols=10,  # copy / reverse / sort: alphabet size
      min_length=3,
      max_length=10,
      max_digits=3,  # addition
      data_dir="~/tensorflow_datasets",  # tfds:NAME datasets
      download=True,  # tfds: may download (fails within seconds when offline)
      tokenizer="",  # "" = the dataset's own; word | char | sentencepiece
      vocab_size=0,  # word: keep the N most frequent (0 = all); sentencepiece: model size
      spm_model_type="unigram",  # unigram | bpe
      bucket_boundaries=(),  # e.g. (10, 20, 40): length buckets, one padded shape each
      # Training pairs longer than these (in tokens, <eos> included) are dropped and
      # counted before batching: one stray 5,000-token line would otherwise pad every
      # batch to its length. 0 = no limit (the default before issue 16).
      max_src_len=256,
      max_tgt_len=256,
      joint_vocab=False,  # one vocabulary of both sides (model.share_embeddings needs it)
  ))

  config.model = ml_collections.ConfigDict(dict(
      family="rnn",  # rnn | transformer
      # rnn (seq2seq_jax/models/rnn/config.py)
      cell="lstm",  # rnn | lstm | gru | ln_lstm
      attention="general",  # none | dot | general | concat | additive | scaled_dot
      embed_dim=64,
      hidden_dim=256,
      num_layers=1,
      bidirectional=True,
      reverse_source=False,
      input_feeding=True,
      context_every_step=False,
      decoder_init="last",  # last | learned | zero
      attention_dim=0,
      dropout=0.0,
      dtype="float32",  # float32 | bfloat16
      predictions="argmax",  # argmax | sample: what scheduled sampling feeds back
      unroll=1,
      # transformer (seq2seq_jax/models/transformer/config.py); dropout, dtype and
      # predictions above are shared, the other rnn fields are not read
      d_model=256,
      num_heads=4,
      ff_dim=1024,
      encoder_layers=3,
      decoder_layers=3,
      attention_dropout=0.0,
      norm="post",  # post (the paper) | pre
      positions="sinusoidal",  # sinusoidal | learned
      max_len=512,  # longest sequence of learned positions
      share_embeddings=False,  # needs one vocabulary for source and target
      tie_output=False,  # output projection = target embedding transposed
  ))

  config.train = ml_collections.ConfigDict(dict(
      num_steps=3000,
      batch_size=64,
      optimizer="adam",  # adam | sgd
      learning_rate=3e-3,  # the peak with a warmup schedule
      lr_schedule="constant",  # constant | rsqrt | cosine | halving (training/optim.py)
      warmup_steps=0,  # rsqrt, cosine: linear warmup steps
      lr_halve_after=0,  # halving: halved at lr_halve_after + k * lr_halve_every, k >= 1
      lr_halve_every=1000,
      adam_b1=0.9,  # the Transformer paper: 0.9, 0.98, 1e-9
      adam_b2=0.999,
      adam_eps=1e-8,
      clip_norm=5.0,
      label_smoothing=0.0,
      # sentences: summed token loss / sentences (the RNN recipe: with clip_norm 5 the
      # clipping is active, as in tensorflow/nmt, OpenNMT-py, JoeyNMT) | tokens: per token
      loss_normalization="sentences",
      log_every_steps=100,
      checkpoint_every_steps=500,
      keep_checkpoints=3,  # the last N, plus the best by dev BLEU
      teacher_forcing=ml_collections.ConfigDict(dict(
          schedule="constant",  # constant | linear | exponential | inverse_sigmoid | step
          ratio=1.0,  # constant
          k=1.0,  # linear: max(eps_min, k - c*i); exponential: k**i;
          # inverse_sigmoid: k / (k + exp(i / k))
          c=1e-4,  # linear
          eps_min=0.0,  # linear
          steps=1000,  # step: teacher forcing before this step, free-running after
      )),
  ))

  config.eval = ml_collections.ConfigDict(dict(
      every_steps=500,
      beam_size=1,  # 1 = greedy, else beam search
      length_penalty=0.6,  # beam search: GNMT alpha; 0 = off
      length_penalty_type="gnmt",  # gnmt ((5+len)/6)**alpha | average len**alpha
      max_len_a=5.0,  # at most floor(a * source length + b) output tokens
      max_len_b=10,  # (number words -> characters: up to 5 characters a word)
      report_greedy=False,  # with a beam, also greedy_bleu / greedy_chrf / ...
      batch_size=500,
      num_attention_plots=3,  # fixed dev sentences plotted at every evaluation
      max_examples=0,  # evaluate on the first N dev pairs; 0 = all
  ))

  # Devices (seq2seq_jax/training/parallel.py): the batch is split over `data`
  # (0 = every device; train.batch_size stays the global batch); stacked sweep
  # members spread over `members`. Not part of the experiment: a run may resume
  # on another mesh.
  config.mesh = ml_collections.ConfigDict(dict(
      data=0,
      members=1,
  ))

  if arg == "quick":
    config_utils.make_quick(config, {
        "model.attention_dim": 0, "eval.max_examples": 0, "train.num_steps": 60,
        "train.batch_size": 32, "train.checkpoint_every_steps": 20, "eval.every_steps": 30,
        "eval.batch_size": 100})
  elif arg:
    raise ValueError(f"configs/default.py: unknown argument {arg!r}; valid: quick")
  return config
