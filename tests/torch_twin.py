"""A PyTorch twin of `models.rnn.RNNSeq2Seq`, written for the parity tests, JoeyNMT-style.

Independent of seq2seq_jax's code: `nn.LSTM` / `nn.GRU` over packed sequences for the
(bidirectional, multi-layer) encoder, so padding is handled by packing rather than by
masks; the decoder steps `nn.LSTM` / `nn.GRU` one token at a time in a Python loop, as
JoeyNMT's `RecurrentDecoder` does; attention scores are the formulas of Luong 2015 and
Bahdanau 2015 with `masked_fill(-inf)` before the softmax. `copy_from(params)` takes a
seq2seq_jax params tree, `grads()` returns the gradients in that tree's layout, so the
two implementations can be compared parameter by parameter. No dropout.
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD_ID, SOS_ID = 0, 1
RNNS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class TorchTwin(nn.Module):
  """The encoder-decoder of `models.rnn.RNNSeq2Seq` for one config (dropout off)."""

  def __init__(self, src_vocab_size, tgt_vocab_size, cell="lstm", attention="general",
               embed_dim=8, hidden_dim=8, num_layers=1, bidirectional=False,
               input_feeding=False, attention_dim=0, decoder_init="last", reverse_source=False,
               **unused):
    super().__init__()
    assert decoder_init in ("last", "last_state", "zero"), decoder_init
    self.cell, self.attention, self.layers = cell, attention, num_layers
    self.hidden, self.bidirectional, self.feeding = hidden_dim, bidirectional, input_feeding
    self.decoder_init, self.reverse_source = decoder_init, reverse_source
    att = attention_dim or hidden_dim
    self.src_embed = nn.Embedding(src_vocab_size, embed_dim)
    self.tgt_embed = nn.Embedding(tgt_vocab_size, embed_dim)
    enc_units = hidden_dim // 2 if bidirectional else hidden_dim
    rnn = RNNS[cell]
    self.encoder = rnn(embed_dim, enc_units, num_layers, batch_first=True,
                       bidirectional=bidirectional)
    extra = (hidden_dim if input_feeding else 0) + (hidden_dim if attention == "additive" else 0)
    self.decoder = rnn(embed_dim + extra, hidden_dim, num_layers, batch_first=True)
    if attention == "general":
      self.w_a = nn.Linear(hidden_dim, hidden_dim, bias=False)
    if attention in ("concat", "additive"):
      self.w_memory = nn.Linear(hidden_dim, att, bias=attention == "additive")
      self.w_query = nn.Linear(hidden_dim, att, bias=False)
      self.v = nn.Parameter(torch.zeros(att))
    if attention != "none":
      self.w_c = nn.Linear(2 * hidden_dim, hidden_dim, bias=False)
    self.out = nn.Linear(hidden_dim, tgt_vocab_size)

  # ----- the forward pass -----

  def encode(self, src):
    """`src [B, S]` -> memory `[B, S, H]`, final states `[layers, B, H]` (h, or (h, c))."""
    lengths = (src != PAD_ID).sum(1)
    if self.reverse_source:  # each sentence backwards, its padding left in place
      src = src.clone()
      for row, n in enumerate(lengths.tolist()):
        src[row, :n] = src[row, :n].flip(0)
    packed = pack_padded_sequence(self.src_embed(src), lengths, batch_first=True,
                                  enforce_sorted=False)
    out, final = self.encoder(packed)
    memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])

    def by_layer(state):  # [layers * dirs, B, units] -> [layers, B, dirs * units]
      dirs = 2 if self.bidirectional else 1
      state = state.view(self.layers, dirs, state.shape[1], state.shape[2])
      return torch.cat([state[:, d] for d in range(dirs)], -1)
    final = tuple(map(by_layer, final)) if isinstance(final, tuple) else by_layer(final)
    return memory, final

  def scores(self, memory, query):
    """Unnormalised scores `[B, S]` of `query [B, H]` over `memory [B, S, H]`."""
    if self.attention in ("dot", "scaled_dot"):
      s = torch.einsum("bsh,bh->bs", memory, query)
      return s / math.sqrt(memory.shape[-1]) if self.attention == "scaled_dot" else s
    if self.attention == "general":
      return torch.einsum("bsh,bh->bs", self.w_a(memory), query)
    hidden = torch.tanh(self.w_memory(memory) + self.w_query(query)[:, None])
    return hidden @ self.v

  def attend(self, memory, mask, query):
    weights = torch.softmax(self.scores(memory, query).masked_fill(~mask, -math.inf), -1)
    return torch.einsum("bs,bsh->bh", weights, memory), weights

  def forward(self, src, tgt):
    """Teacher-forced logits `[B, T, V]` and attention weights `[B, T, S]` (or None)."""
    memory, final = self.encode(src)
    mask = src != PAD_ID
    # JoeyNMT's `init_hidden: last`: the encoder's final h, for an LSTM's cell state too;
    # `last_state` hands over the cell state as well (tensorflow/nmt, OpenNMT-py).
    h = final[0] if self.cell == "lstm" else final
    if self.decoder_init == "zero":
      h = torch.zeros_like(h)
    state = (h, h) if self.cell == "lstm" else h
    if self.decoder_init == "last_state":
      state = final
    batch, tgt_len = tgt.shape
    tgt_in = torch.cat([torch.full((batch, 1), SOS_ID, dtype=tgt.dtype), tgt[:, :-1]], 1)
    emb = self.tgt_embed(tgt_in)
    feed = torch.zeros(batch, self.hidden, dtype=memory.dtype)
    outs, all_weights = [], []
    for t in range(tgt_len):
      inputs = [emb[:, t]]
      if self.feeding:
        inputs.append(feed)
      if self.attention == "additive":  # Bahdanau: the previous top-layer state asks
        top = (state[0] if self.cell == "lstm" else state)[-1]
        context, weights = self.attend(memory, mask, top)
        inputs.append(context)
      h, state = self.decoder(torch.cat(inputs, -1)[:, None], state)
      h = h[:, 0]
      if self.attention == "none":
        out, weights = h, None
      else:
        if self.attention != "additive":  # Luong: the new top-layer state asks
          context, weights = self.attend(memory, mask, h)
        out = torch.tanh(self.w_c(torch.cat([context, h], -1)))
      feed = out
      outs.append(out)
      all_weights.append(weights)
    logits = self.out(torch.stack(outs, 1))
    weights = None if self.attention == "none" else torch.stack(all_weights, 1)
    return logits, weights

  def loss(self, src, tgt, label_smoothing=0.0, normalization="tokens"):
    """Token cross-entropy summed over the non-padding targets, divided by their
    number (`tokens`) or by the number of sentences (`sentences`)."""
    logits, _ = self(src, tgt)
    total = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                        ignore_index=PAD_ID, label_smoothing=label_smoothing,
                                        reduction="sum")
    return total / ((tgt != PAD_ID).sum() if normalization == "tokens" else tgt.shape[0])

  # ----- seq2seq_jax's parameter layout -----

  def _pairs(self):
    """(path in the seq2seq_jax tree, torch tensor, transpose?) for every parameter."""
    pairs = [(("encoder", "embedding"), self.src_embed.weight, False),
             (("decoder", "embedding"), self.tgt_embed.weight, False)]
    dirs = [("fwd", "")] + ([("bwd", "_reverse")] if self.bidirectional else [])
    for layer in range(self.layers):
      for ours, suffix in dirs:
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
          pairs.append((("encoder", f"layer{layer}_{ours}", name),
                        getattr(self.encoder, _torch_rnn_name(name, layer, suffix)),
                        name[0] == "w"))
      for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        pairs.append((("decoder", f"layer{layer}", name),
                      getattr(self.decoder, _torch_rnn_name(name, layer)), name[0] == "w"))
    if self.attention == "general":
      pairs.append((("decoder", "attention", "w_a"), self.w_a.weight, True))
    if self.attention in ("concat", "additive"):
      pairs += [(("decoder", "attention", "w_memory"), self.w_memory.weight, True),
                (("decoder", "attention", "w_query"), self.w_query.weight, True),
                (("decoder", "attention", "v"), self.v, False)]
      if self.attention == "additive":
        pairs.append((("decoder", "attention", "b"), self.w_memory.bias, False))
    if self.attention != "none":
      pairs.append((("decoder", "w_c"), self.w_c.weight, True))
    pairs += [(("decoder", "out_w"), self.out.weight, True),
              (("decoder", "out_b"), self.out.bias, False)]
    return pairs

  def copy_from(self, params):
    """Sets every weight from a seq2seq_jax params tree (numpy-convertible leaves)."""
    with torch.no_grad():
      for path, tensor, transpose in self._pairs():
        value = params
        for key in path:
          value = value[key]
        value = np.asarray(value)
        tensor.copy_(torch.from_numpy((value.T if transpose else value).copy()))
    return self

  def grads(self) -> dict:
    """The `.grad` of every parameter, as a seq2seq_jax-shaped tree of numpy arrays."""
    tree = {}
    for path, tensor, transpose in self._pairs():
      node = tree
      for key in path[:-1]:
        node = node.setdefault(key, {})
      grad = tensor.grad.detach().numpy()
      node[path[-1]] = grad.T if transpose else grad
    return tree


def _torch_rnn_name(name: str, layer: int, suffix: str = "") -> str:
  """PyTorch's name of our `w_ih`/`w_hh`/`b_ih`/`b_hh` in layer `layer`
  (`weight_ih_l0`, `bias_hh_l1_reverse`...)."""
  return f"{'weight' if name[0] == 'w' else 'bias'}_{name[2:]}_l{layer}{suffix}"
