"""Bad input, table-driven: each row is one command that must fail with one line.

Every row asserts a non-zero exit, a last stderr line that starts with `error:` and
names the field, flag or file, no traceback, and no workdir left behind.
"""

import hashlib
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICK = f"--config={ROOT / 'configs' / 'default.py'}:quick"
STACK = f"--config={ROOT / 'tests' / 'configs' / 'stack_quick.py'}:plain"

MAIN = [  # (flags after `main QUICK --workdir=W`, what the error line must name)
    (["--config.model.cel=x"], "'cel' Did you mean \"cell\""),
    (["--config.model.cell=lstmm"], "model.cell='lstmm'"),
    (["--config.train.num_steps=abc"], "--config.train.num_steps=abc"),
    (["--config.train.batch_size=-3"], "train.batch_size"),
    (["--config.train.learning_rate=-1"], "train.learning_rate"),
    (["--config.train.clip_norm=-1"], "train.clip_norm"),
    (["--config.train.label_smoothing=1.5"], "train.label_smoothing"),
    (["--config.model.dropout=1.2"], "model.dropout"),
    (["--config.train.loss_normalization=words"], "train.loss_normalization"),
    (["--config.train.lr_schedule=linear"], "train.lr_schedule"),
    (["--config.train.optimizer=lion"], "train.optimizer"),
    (["--config.train.warmup_steps=-1"], "train.warmup_steps"),
    (["--config.train.adam_b1=1.5"], "train.adam_b1"),
    (["--config.train.teacher_forcing.schedule=cosine"], "teacher_forcing"),
    (["--config.eval.beam_size=0"], "eval."),
    (["--config.train.checkpoint_every_steps=15"], "train.checkpoint_every_steps"),
    (["--config.dataset.bucket_boundaries=(1.5,)"], "dataset.bucket_boundaries"),
    (["--config.dataset.name=wmt99"], "dataset.name"),
    (["--config.dataset.name=tsv:/missing.tsv"], "tsv:/missing.tsv"),
    (["--config.dataset.name=tfds:no_such_dataset", "--config.dataset.download=False"],
     "tfds:no_such_dataset"),
    (["--config.dataset.dev_size=0"], "dataset.dev_size"),
    (["--config.model.family=lstm"], "model.family"),
    (["--config.model.share_embeddings=True", "--config.model.family=transformer"],
     "dataset.joint_vocab"),
    (["--config.mesh.data=-1"], "mesh.data"),
    (["--config.seed=-1"], "seed must be an int >= 0"),
    (["--config.dataset.max_src_len=-5"], "dataset.max_src_len"),
    (["--config.dataset.train_size=0"], "dataset.train_size"),
    (["--config.dataset.min_length=20"], "dataset.min_length=20"),
    (["--config.eval.num_attention_plots=-1"], "eval.num_attention_plots"),
    (["--bogus"], "'bogus'"),
]


def _run(module, *args, env=None):
  return subprocess.run([sys.executable, "-m", f"seq2seq_jax.{module}", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, input="",
                        env={**os.environ, **(env or {})})


def _assert_one_line(proc, name):
  assert proc.returncode != 0, proc.stdout + proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and name in last, proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("flags,name", MAIN, ids=[" ".join(f) for f, _ in MAIN])
def test_main_refuses_bad_input_in_one_line(tmp_path, flags, name):
  workdir = tmp_path / "run"
  _assert_one_line(_run("main", QUICK, f"--workdir={workdir}", *flags), name)
  assert not workdir.exists()


@pytest.mark.parametrize("module", ["main", "sweep"])
@pytest.mark.parametrize("overrides", [[], ["--config.seed=3"]])
def test_a_missing_config_file_is_one_line(tmp_path, module, overrides):
  """With an override, before: three chained tracebacks (ml_collections reads the file
  to parse the override, and the error handler asked the unparsed flag its value)."""
  _assert_one_line(_run(module, "--config=configs/nope.py", *overrides,
                        f"--workdir={tmp_path / 'w'}"), "--config=configs/nope.py: no such file")
  assert not (tmp_path / "w").exists()


BROKEN_CONFIGS = {  # a config file's own error: before, its traceback
    "syntax": ("def get_config(:\n", "line 1: invalid syntax"),
    "raises": ("def get_config():\n  raise RuntimeError('boom')\n",
               "line 2 raised RuntimeError: boom"),
    "get_sweep raises": ("from configs.default import get_config  # noqa\n\n"
                         "def get_sweep():\n  return 1 / 0\n",
                         "line 4 raised ZeroDivisionError: division by zero"),
    "no get_config": ("def get_sweep():\n  return [{'seed': 1}]\n",
                      "the file defines no get_config()"),  # before: "unknown config field"
}
SWEEP_SHAPES = {  # get_sweep() of another shape: before, an AttributeError or TypeError traceback
    "a dict": ("{'seed': 1}", "got dict"),
    "not dicts": ("[1, 2]", "got list of int"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CONFIGS))
def test_a_config_file_that_fails_is_one_line_naming_its_line(tmp_path, case):
  text, message = BROKEN_CONFIGS[case]
  config = tmp_path / "broken.py"
  config.write_text(text)
  modules = ["sweep"] if case == "get_sweep raises" else ["main", "sweep"]
  for module, overrides in [(m, o) for m in modules for o in ([], ["--config.seed=3"])]:
    proc = _run(module, f"--config={config}", *overrides, f"--workdir={tmp_path / 'w'}")
    _assert_one_line(proc, f"--config={config}: {message}")
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("case", sorted(SWEEP_SHAPES))
def test_a_get_sweep_of_another_shape_is_one_line(tmp_path, case):
  returned, message = SWEEP_SHAPES[case]
  config = tmp_path / "sweep.py"
  config.write_text("from configs.default import get_config  # noqa\n\n"
                    f"def get_sweep():\n  return {returned}\n")
  proc = _run("sweep", f"--config={config}", f"--workdir={tmp_path / 'w'}")
  _assert_one_line(proc, f"{config}: get_sweep() must return a list of members, each a dict")
  assert message in proc.stderr
  assert not (tmp_path / "w").exists()


def test_summarize_of_a_missing_sweep_directory_is_one_line(tmp_path):
  """Before: FileNotFoundError on members.csv."""
  _assert_one_line(_run("sweep", STACK, f"--workdir={tmp_path / 'none'}", "--summarize"),
                   f"--workdir={tmp_path / 'none'}: no such directory")
  assert not (tmp_path / "none").exists()


def test_an_unknown_config_argument_gives_its_reason(tmp_path):
  _assert_one_line(_run("main", f"{QUICK[:-len(':quick')]}:fast", f"--workdir={tmp_path / 'w'}"),
                   "unknown argument 'fast'; valid: quick")


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "file").write_text("x")
  _assert_one_line(_run("main", QUICK, f"--workdir={tmp_path / 'file'}"), "is a file")
  assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("name,message", [
    ("x" * 300, "File name too long; choose another --workdir"),  # before: a bare [Errno 36]
    ("file/run", "file is a file, so no directory can be made under it"),  # before: "not writable"
])
def test_a_workdir_that_cannot_be_made_is_one_line(tmp_path, name, message):
  (tmp_path / "file").write_text("x")
  _assert_one_line(_run("main", QUICK, f"--workdir={tmp_path / name}"), message)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_missing_workdir_flag_is_one_line():
  _assert_one_line(_run("main", QUICK), "--workdir")


@pytest.mark.parametrize("args,name", [
    (["stats", "tsv:/missing.tsv"], "tsv:/missing.tsv"),
    (["stats", "wmt99"], "wmt99"),
])
def test_data_refuses_bad_input_in_one_line(args, name):
  _assert_one_line(_run("data", *args), name)


def _corpus(tmp_path, kind: str) -> Path:
  if kind == "directory":
    (tmp_path / "pairs.tsv").mkdir()
    return tmp_path / "pairs.tsv"
  import gzip
  whole = gzip.compress(b"".join(f"w{i} x{i}\ty{i} z{i}\n".encode() for i in range(3000)))
  path = tmp_path / "pairs.tsv.gz"
  path.write_bytes(whole[:len(whole) // 2] if kind == "cut short" else b"not gzip at all")
  return path


@pytest.mark.parametrize("kind,message", [
    ("cut short", "cannot be read after line"),  # before: EOFError's traceback
    ("not compressed", "cannot be read after line 0 (BadGzipFile"),  # before: a traceback
    ("directory", "is a directory; give a TSV corpus file"),  # before: a bare [Errno 21]
])
def test_a_damaged_or_wrong_corpus_file_is_one_line(tmp_path, kind, message):
  corpus = _corpus(tmp_path, kind)
  _assert_one_line(_run("data", "stats", f"tsv:{corpus}"), message)
  if kind == "cut short":
    workdir = tmp_path / "run"
    _assert_one_line(_run("main", QUICK, f"--config.dataset.name=tsv:{corpus}",
                          f"--workdir={workdir}"), f"{corpus}: {message}")
    assert not workdir.exists()


def test_translate_without_a_training_workdir_is_one_line(tmp_path):
  _assert_one_line(_run("translate", f"--workdir={tmp_path}"), "config.json does not exist")


@pytest.mark.parametrize("args,name", [
    (["--index=9"], "--index=9"),
    (["--stack_index=9"], "--stack_index=9"),
    (["--parallel=0"], "--parallel"),
])
def test_sweep_refuses_bad_input_in_one_line(tmp_path, args, name):
  _assert_one_line(_run("sweep", STACK, f"--workdir={tmp_path / 'sweep'}", *args), name)


def _snapshot(directory: Path) -> dict:
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["config.json", "vocab_src.json", "vocab_tgt.json"])
def test_a_damaged_workdir_file_is_one_line_naming_it(quick_run, tmp_path, name):
  """Cut short, as a kill or a full disk leaves it: before, the JSON parser's
  message with no file named."""
  workdir = tmp_path / "run"
  shutil.copytree(quick_run, workdir)
  (workdir / "finished.json").unlink()  # a kill or a full disk: the run did not finish
  path = workdir / name
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
  before = _snapshot(workdir)
  for proc in (_run("main", QUICK, f"--workdir={workdir}"),
               _run("translate", f"--workdir={workdir}")):
    _assert_one_line(proc, f"{path}:")
    assert re.search(rf"{re.escape(str(path))}:\d+: damaged, not JSON", proc.stderr)
  assert _snapshot(workdir) == before


@pytest.mark.parametrize("name,text,keys", [
    ("config.json", "[]", "an object"),
    ("vocab_src.json", "{}", "an object with kind"),
    ("vocab_tgt.json", '{"kind": "word"}', "an object with kind, tokens"),
    ("finished.json", '{"x": 1}', "an object with step, reason"),
])
def test_a_workdir_file_of_another_shape_is_one_line_naming_it(quick_run, tmp_path, name, text,
                                                               keys):
  """Valid JSON that is not what the run wrote: before, a KeyError, TypeError or
  AttributeError traceback."""
  workdir = tmp_path / "run"
  shutil.copytree(quick_run, workdir)
  if name != "finished.json":
    (workdir / "finished.json").unlink()
  (workdir / name).write_text(text)
  before = _snapshot(workdir)
  commands = [_run("main", QUICK, f"--workdir={workdir}")]
  if name != "finished.json":  # translate does not read it
    commands.append(_run("translate", f"--workdir={workdir}"))
  for proc in commands:
    _assert_one_line(proc, f"{workdir / name}: damaged, not what a run writes there ({keys})")
  assert _snapshot(workdir) == before


@pytest.mark.parametrize("name,kind,message", [
    ("metrics.jsonl", "directory", "Is a directory"),
    ("vocab_src.json", "directory", "Is a directory"),
    ("tensorboard", "file", "a file where the run needs a directory"),
    ("checkpoints", "file", "a file where the run needs a directory"),
])
def test_a_workdir_entry_of_another_kind_is_one_line_naming_it(quick_run, tmp_path, name, kind,
                                                               message):
  """Before: a bare `[Errno 21] Is a directory: ...` or `[Errno 20] Not a directory:
  .../checkpoints/last`, saying neither which entry nor what to do."""
  workdir = tmp_path / "run"
  shutil.copytree(quick_run, workdir)
  (workdir / "finished.json").unlink()
  shutil.rmtree(workdir / name) if (workdir / name).is_dir() else (workdir / name).unlink()
  (workdir / name).mkdir() if kind == "directory" else (workdir / name).write_text("")
  _assert_one_line(_run("main", QUICK, f"--workdir={workdir}"),
                   f"{workdir / name}: {message}: the run cannot use it there; move it away")


def test_verbose_prints_the_traceback_above_the_error_line(tmp_path):
  for proc in (_run("main", QUICK, f"--workdir={tmp_path / 'w'}",
                    "--config.train.learning_rate=-1", "--verbose"),
               _run("data", "stats", "tsv:/missing.tsv", "--verbose"),
               _run("translate", f"--workdir={tmp_path}", env={"SEQ2SEQ_JAX_VERBOSE": "1"})):
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr


def test_out_of_memory_is_one_line_and_the_corrected_command_takes_the_workdir(tmp_path):
  """A model too big for the device: before, XLA's traceback, and a config.json that
  refused the corrected command though nothing had trained."""
  workdir = tmp_path / "run"
  _assert_one_line(_run("main", QUICK, f"--workdir={workdir}", "--config.model.hidden_dim=300000"),
                   "the device ran out of memory (")
  proc = _run("main", QUICK, f"--workdir={workdir}", "--config.train.num_steps=10",
              "--config.eval.every_steps=10")
  assert proc.returncode == 0, proc.stderr
  assert "trained nothing there: its config.json, environment.json and vocabularies are made " \
      "afresh" in proc.stderr
  assert json.loads((workdir / "config.json").read_text())["model"]["hidden_dim"] == 32
