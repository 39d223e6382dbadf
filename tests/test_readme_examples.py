"""The README's example translations: right (num2words' own German), and what the
demo model (`make demo`'s config, trained here: slow) outputs for them."""

from pathlib import Path
import re
import subprocess
import sys

from num2words import num2words
import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_examples() -> list[tuple[str, str]]:
  """The `source -> output` lines of the README's block after "The demo model translates"."""
  text = (ROOT / "README.md").read_text()
  block = re.search(r"The demo model translates.*?```text\n(.*?)```", text, re.S).group(1)
  return [tuple(part.strip() for part in line.split(" -> ")) for line in block.splitlines()]


UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def english_number(words: str) -> int:
  """The number of English number words below 100,000, parsed by hand."""
  total = current = 0
  for word in words.replace(",", " ").replace("-", " ").split():
    if word in UNITS:
      current += UNITS.index(word)
    elif word in TENS:
      current += 10 * TENS.index(word)
    elif word == "hundred":
      current *= 100
    elif word == "thousand":
      total, current = total + current * 1000, 0
    else:
      assert word == "and", word
  return total + current


def test_the_readme_examples_are_right():
  examples = readme_examples()
  assert len(examples) >= 6 and any(src == "forty-two" for src, _ in examples)
  for src, out in examples:
    n = english_number(src)
    assert num2words(n, lang="en") == src and num2words(n, lang="de") == out, (src, out)


@pytest.mark.slow
def test_the_demo_model_translates_the_readme_examples(tmp_path):
  """`make demo`'s run (minutes: slow), then the README's command on its examples."""
  workdir = tmp_path / "demo"
  subprocess.run([sys.executable, "-m", "seq2seq_jax.main", "--config=configs/default.py",
                  f"--workdir={workdir}"], cwd=ROOT, check=True, capture_output=True,
                 timeout=3600)
  examples = readme_examples()
  sources = "".join(s + "\n" for s, _ in examples)
  for flags in ([], ["--beam_size=1"]):  # the README's command (beam 5), and greedy
    proc = subprocess.run([sys.executable, "-m", "seq2seq_jax.translate",
                           f"--workdir={workdir}", *flags], cwd=ROOT, input=sources,
                          capture_output=True, text=True, timeout=600, check=True)
    assert proc.stdout.splitlines() == [out for _, out in examples], flags
