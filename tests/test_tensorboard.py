"""The TensorBoard events of a run, read back with the event protocol alone (TFRecord
framing + tensorboardX's `Event` message): the learning rate, the teacher-forcing
ratio, dev BLEU and exact match by length, and the attention maps as images."""

import struct

from tensorboardX.proto import event_pb2


def read_events(directory):
  events = []
  for path in sorted(directory.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    at = 0
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      events.append(event_pb2.Event.FromString(data[at + 12:at + 12 + length]))
      at += 12 + length + 4  # length, its crc, the record, its crc
  return events


def test_the_events_hold_the_schedules_lengths_and_attention_images(quick_run):
  scalars, images = {}, {}
  for event in read_events(quick_run / "tensorboard"):
    for value in event.summary.value:
      if value.HasField("image"):
        images.setdefault(value.tag, []).append(event.step)
      else:
        scalars.setdefault(value.tag, {})[event.step] = value.simple_value
  assert set(scalars["train/learning_rate"]) == {10, 20, 30, 40, 50, 60}
  assert abs(scalars["train/learning_rate"][60] - 3e-3) < 1e-9  # float32 of the config's
  assert scalars["train/tf_ratio"][30] == 1.0  # the quick config: constant teacher forcing
  assert any(tag.startswith("dev/bleu_by_length/") for tag in scalars)
  assert any(tag.startswith("dev/exact_match_by_length/") for tag in scalars)
  assert images["dev/attention/0"] == [30, 60] and images["test/attention/0"] == [60]
