"""The default experiment: English number words -> German, attention LSTM.

    python -m seq2seq_jax.main --config=configs/default.py --workdir=/tmp/num2words
    python -m seq2seq_jax.main --config=configs/default.py:quick --workdir=/tmp/quick

German puts the units before the tens ("forty-two" -> "zweiundvierzig"), so
the attention maps show the reordering. Source words, target characters.

`base_config()` is every field a run can have, at values that change nothing
when a field is added (other configs start from it); `get_config()` is the demo:
that plus its recipe, evaluated every 250 steps and stopped once dev exact match
has not improved in two evaluations (measured in the README).
"""

import ml_collections

from seq2seq_jax import config_utils


def base_config():
  config = ml_collections.ConfigDict()
  config.seed = 0  # initialisation, dropout, data order and teacher-forcing coins

  config.dataset = ml_collections.ConfigDict(dict(
      # num2words_en_de | copy | reverse | sort | addition | debian:de-en | debian:en-es |
      # tsv:PATH | tfds:NAME[/CONFIG]
      name="num2words_en_de",
      max_number=99_999,  # num2words_en_de: every number in [0, max_number]
      # num2words_en_de: by_length (dev/test stratified by source length, small numbers
      # repeated in training) | hash (every number once, split by hash: runs before it)
      number_split="by_length",
      train_size=20_000,  # generated tasks (copy, reverse, sort, addition)
      dev_size=1000,  # pairs held out for evaluation during training
      test_size=1000,  # pairs held out for the final evaluation
      seed=0,  # generated tasks: which sequences
      num_symbols=10,  # copy / reverse / sort: alphabet size
      min_length=3,  # copy / reverse / sort: shortest sequence
      max_length=10,  # copy / reverse / sort: longest sequence
      max_digits=3,  # addition
      data_dir="~/tensorflow_datasets",  # tfds:NAME datasets
      download=True,  # tfds: may download (fails within seconds when offline)
      tokenizer="",  # "" = the dataset's own; word | char | sentencepiece
      vocab_size=0,  # word: keep the N most frequent (0 = all); sentencepiece: model size
      spm_model_type="unigram",  # unigram | bpe
      bucket_boundaries=(),  # e.g. (10, 20, 40): length buckets, one padded shape each
      # Training pairs with more tokens are dropped and counted before batching (one
      # stray 5,000-token line would pad every batch to it); 0 = no limit (the old default)
      max_src_len=256,
      max_tgt_len=256,  # the same for targets (<eos> included)
      joint_vocab=False,  # one vocabulary of both sides (model.share_embeddings needs it)
  ))

  config.model = ml_collections.ConfigDict(dict(
      family="rnn",  # rnn | transformer
      # rnn (seq2seq_jax/models/rnn/config.py)
      cell="lstm",  # rnn | lstm | gru | ln_lstm
      attention="general",  # none | dot | general | concat | additive | scaled_dot
      embed_dim=64,  # source and target embedding size
      hidden_dim=256,  # cell state size of encoder and decoder
      num_layers=1,  # stacked cells in encoder and decoder
      bidirectional=True,  # encoder reads both ways (Bahdanau 2015)
      reverse_source=False,  # feed the source backwards (Sutskever 2014)
      input_feeding=True,  # the attentional state is an input of the next step (Luong 2015)
      context_every_step=False,  # the encoder summary is an input of every step (Cho 2014)
      decoder_init="last",  # last (h only) | last_state (h and c) | learned | zero
      attention_dim=0,  # concat / additive score size; 0 = hidden_dim
      dropout=0.0,  # on embeddings and between layers (the Transformer: residuals too)
      dtype="float32",  # float32 | bfloat16
      predictions="argmax",  # argmax | sample: what scheduled sampling feeds back
      unroll=1,  # jax.lax.scan unroll of every time loop (speed only)
      # transformer (seq2seq_jax/models/transformer/config.py); dropout, dtype and
      # predictions above are shared, the other rnn fields are not read
      d_model=256,  # width of every layer
      num_heads=4,  # attention heads (d_model must divide by it)
      ff_dim=1024,  # feed-forward inner size
      encoder_layers=3,  # encoder blocks
      decoder_layers=3,  # decoder blocks
      attention_dropout=0.0,  # on attention weights
      norm="post",  # post (the paper) | pre
      positions="sinusoidal",  # sinusoidal | learned
      max_len=512,  # longest sequence of learned positions
      share_embeddings=False,  # needs one vocabulary for source and target
      tie_output=False,  # output projection = target embedding transposed
  ))

  config.train = ml_collections.ConfigDict(dict(
      num_steps=3000,  # training steps (updates)
      batch_size=64,  # sentence pairs per step, over all devices
      optimizer="adam",  # adam | sgd
      learning_rate=3e-3,  # the peak with a warmup schedule
      lr_schedule="constant",  # constant | rsqrt | cosine | halving (training/optim.py)
      warmup_steps=0,  # rsqrt, cosine: linear warmup steps
      lr_halve_after=0,  # halving: halved at lr_halve_after + k * lr_halve_every, k >= 1
      lr_halve_every=1000,  # halving: the interval
      adam_b1=0.9,  # the Transformer paper: 0.9, 0.98, 1e-9
      adam_b2=0.999,  # adam: second-moment decay
      adam_eps=1e-8,  # adam: epsilon
      clip_norm=5.0,  # global gradient norm clipping; 0 = off
      label_smoothing=0.0,  # in [0, 1)
      # sentences: summed token loss / sentences (the RNN recipe: with clip_norm 5 the
      # clipping is active, as in tensorflow/nmt, OpenNMT-py, JoeyNMT) | tokens: per token
      loss_normalization="sentences",
      log_every_steps=100,  # a train line in metrics.jsonl and the log
      checkpoint_every_steps=500,  # a multiple of log_every_steps (exact resume)
      keep_checkpoints=3,  # the last N, plus the best by dev BLEU
      teacher_forcing=ml_collections.ConfigDict(dict(
          schedule="constant",  # constant | linear | exponential | inverse_sigmoid | step
          ratio=1.0,  # constant
          # linear: max(eps_min, k - c*i); exponential: k**i;
          # inverse_sigmoid: k / (k + exp(i / k))
          k=1.0,
          c=1e-4,  # linear
          eps_min=0.0,  # linear
          steps=1000,  # step: teacher forcing before this step, free-running after
      )),
      # Stop after `patience` dev evaluations in a row without an improvement of more
      # than min_delta in metric (training/early_stopping.py); 0 = train num_steps
      early_stopping=ml_collections.ConfigDict(dict(
          patience=0,  # dev evaluations without improvement before stopping; 0 = off
          metric="bleu",  # bleu | chrf | exact_match (higher is better) | loss (lower)
          min_delta=0.0,  # the least change that counts as an improvement
      )),
      # Warm start: the params of another run's checkpoint (WORKDIR, WORKDIR:best or
      # WORKDIR:last), with a fresh optimizer and step 0; its vocabularies must match
      init_from="",
  ))

  config.eval = ml_collections.ConfigDict(dict(
      every_steps=500,  # dev evaluation interval (a multiple of log_every_steps)
      beam_size=1,  # 1 = greedy, else beam search
      length_penalty=0.6,  # beam search: GNMT alpha; 0 = off
      length_penalty_type="gnmt",  # gnmt ((5+len)/6)**alpha | average len**alpha
      max_len_a=5.0,  # at most floor(a * source length + b) output tokens
      max_len_b=10,  # (number words -> characters: up to 5 characters a word)
      report_greedy=False,  # with a beam, also greedy_bleu / greedy_chrf / ...
      batch_size=500,  # sentences decoded at once
      num_attention_plots=3,  # fixed dev sentences plotted at every evaluation
      max_examples=0,  # evaluate on the first N dev pairs; 0 = all
  ))

  # Devices (seq2seq_jax/training/parallel.py): the batch is split over `data`
  # (0 = every device; train.batch_size stays the global batch); stacked sweep
  # members spread over `members`. Not part of the experiment: a run may resume
  # on another mesh.
  config.mesh = ml_collections.ConfigDict(dict(
      data=0,  # devices the batch is split over; 0 = every device
      members=1,  # devices a stack's members are spread over
  ))

  return config


def get_config(arg=None):
  config = base_config()
  # The demo's recipe: dev exact match reaches 1.0 at step 500 (README) and then
  # cannot improve, so two evaluations later training ends (the cap: 3,000 steps).
  config.train.log_every_steps = 50
  config.eval.every_steps = 250
  config.train.early_stopping.patience = 2
  config.train.early_stopping.metric = "exact_match"
  if arg == "quick":
    config_utils.make_quick(config, {
        "model.attention_dim": 0, "eval.max_examples": 0, "train.num_steps": 60,
        "train.batch_size": 32, "train.checkpoint_every_steps": 20, "eval.every_steps": 30,
        "eval.batch_size": 100})
    # The tests' 60 steps, whole (early stopping has its own tests).
    config.train.early_stopping.patience = 0
  elif arg:
    raise ValueError(f"configs/default.py: unknown argument {arg!r}; valid: quick")
  return config
