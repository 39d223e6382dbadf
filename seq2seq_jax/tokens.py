"""The special token ids, the same for every vocabulary."""

PAD_ID = 0
SOS_ID = 1
EOS_ID = 2
UNK_ID = 3
SPECIAL_TOKENS = ("<pad>", "<sos>", "<eos>", "<unk>")
