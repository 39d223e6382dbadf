"""Writes what JoeyNMT needs to train the same model on the same data as a seq2seq_jax config.

    python experiments/parity/joeynmt_export.py --out=workdirs/parity/joeynmt --seed=0
    cd workdirs/parity/joeynmt && python -m joeynmt train seed0.yaml   # JoeyNMT's own venv

The split, the length filter and the two sentencepiece models are seq2seq_jax's own
(`seq2seq_jax.data.load`), so both toolkits see the same training pairs, the same pieces
and the same dev and test references. Writes `OUT/data/{train,dev,test}.{src,tgt}`,
`OUT/data/spm.{src,tgt}.model`, `OUT/data/vocab.{src,tgt}` and `OUT/seedN.yaml`, a JoeyNMT
2.3 config of the same architecture and training settings.
"""

import argparse
from pathlib import Path
import sys

from seq2seq_jax import data
from seq2seq_jax.config_utils import load_module
from seq2seq_jax.tokens import SPECIAL_TOKENS

ROOT = Path(__file__).resolve().parents[2]

YAML = """\
name: "parity_seed{seed}"
joeynmt_version: "2.3.0"
model_dir: "{model_dir}"
use_cuda: False
random_seed: {seed}
data:
  train: "{data}/train"
  dev: "{data}/dev"
  test: "{data}/test"
  dataset_type: "plain"
  src:
    lang: "src"
    level: "bpe"
    voc_file: "{data}/vocab.src"
    tokenizer_type: "sentencepiece"
    tokenizer_cfg: {{model_file: "{data}/spm.src.model"}}
  trg:
    lang: "tgt"
    level: "bpe"
    voc_file: "{data}/vocab.tgt"
    tokenizer_type: "sentencepiece"
    tokenizer_cfg: {{model_file: "{data}/spm.tgt.model"}}
training:
  optimizer: "adam"
  learning_rate: {lr}
  scheduling: "exponential"  # JoeyNMT 2.3 needs a scheduler: this one keeps the rate fixed
  decrease_factor: 1.0
  clip_grad_norm: {clip}
  batch_size: {batch}
  batch_type: "sentence"
  label_smoothing: {ls}
  normalization: "{normalization}"
  updates: {steps}
  epochs: 1000
  validation_freq: {every}
  logging_freq: 100
  eval_metrics: ["bleu"]
  early_stopping_metric: "bleu"
  keep_best_ckpts: 1
  shuffle: True
  overwrite: True
  print_valid_sents: [0, 1, 2]
testing:
  beam_size: 1
  batch_size: 256
  batch_type: "sentence"
  max_output_length: {max_out}
  eval_metrics: ["bleu"]
  sacrebleu_cfg: {{tokenize: "13a"}}
model:
  initializer: "xavier_uniform"
  embed_initializer: "xavier_uniform"
  bias_initializer: "zeros"
  init_rnn_orthogonal: False
  lstm_forget_gate: 1.0
  tied_embeddings: False
  encoder:
    type: "recurrent"
    rnn_type: "{cell}"
    embeddings: {{embedding_dim: {embed}, scale: False, dropout: {dropout}}}
    hidden_size: {enc_hidden}
    bidirectional: {bidi}
    dropout: {dropout}
    num_layers: {layers}
  decoder:
    type: "recurrent"
    rnn_type: "{cell}"
    embeddings: {{embedding_dim: {embed}, scale: False, dropout: {dropout}}}
    hidden_size: {hidden}
    dropout: {dropout}
    hidden_dropout: {dropout}
    num_layers: {layers}
    input_feeding: {feeding}
    init_hidden: "last"
    attention: "luong"
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=str(ROOT / "experiments" / "parity" / "config.py"),
                      help="a seq2seq_jax config file, optionally FILE:ARG")
  parser.add_argument("--out", required=True)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  path, _, arg = args.config.partition(":")
  config = load_module(path).get_config(arg or None)
  m, t = config.model, config.train
  if m.attention != "general" or m.decoder_init != "last":
    sys.exit("error: JoeyNMT's twin of this export is Luong `general` attention with "
             "decoder_init='last'")
  out = Path(args.out).resolve()
  data_dir = out / "data"
  if not (data_dir / "vocab.tgt").exists():
    dataset = data.load(config.dataset)
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, pairs in dataset.texts.items():
      for side, index in (("src", 0), ("tgt", 1)):
        (data_dir / f"{split}.{side}").write_text(
            "".join(p[index] + "\n" for p in pairs), encoding="utf-8")
    for side, vocab in (("src", dataset.src_vocab), ("tgt", dataset.tgt_vocab)):
      (data_dir / f"spm.{side}.model").write_bytes(vocab.proto)
      pieces = [vocab.sp.id_to_piece(i) for i in range(len(SPECIAL_TOKENS), len(vocab))]
      (data_dir / f"vocab.{side}").write_text("".join(p + "\n" for p in pieces),
                                               encoding="utf-8")
  # JoeyNMT has one output-length limit: ours (a * source + b) at the longest training source.
  yaml = YAML.format(
      seed=args.seed, model_dir=out / f"seed{args.seed}", data=data_dir, lr=t.learning_rate,
      clip=t.clip_norm, batch=t.batch_size, ls=t.label_smoothing,
      normalization={"sentences": "batch", "tokens": "tokens"}[t.loss_normalization],
      steps=t.num_steps, every=config.eval.every_steps,
      max_out=int(config.eval.max_len_a * config.dataset.max_src_len +
                  config.eval.max_len_b), cell=m.cell,
      embed=m.embed_dim, hidden=m.hidden_dim,
      enc_hidden=m.hidden_dim // 2 if m.bidirectional else m.hidden_dim,
      bidi=m.bidirectional, dropout=m.dropout, layers=m.num_layers, feeding=m.input_feeding)
  path = out / f"seed{args.seed}.yaml"
  path.write_text(yaml)
  print(path)


if __name__ == "__main__":
  main()
