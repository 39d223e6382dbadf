"""Faults from issue 16 (its numbered items), each reproduced: nothing lost, one error line.

Each test failed on the code before its fix (checked against the commit before).
"""

import asyncio
import json
from pathlib import Path
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from seq2seq_jax.training.workdir import TIMING_FIELDS

ROOT = Path(__file__).resolve().parent.parent
QUICK = f"--config={ROOT / 'configs' / 'default.py'}:quick"


def run(module, *args, input=None):
  return subprocess.run([sys.executable, "-m", f"seq2seq_jax.{module}", *args], cwd=ROOT,
                        input=input, capture_output=True, text=True, timeout=600)


def assert_one_error_line(proc, *names):
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), proc.stderr
  for name in names:
    assert name in last, last
  assert "Traceback" not in proc.stderr, proc.stderr


def metrics(workdir):
  lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(ln).items() if k not in TIMING_FIELDS} for ln in lines]


@pytest.fixture(scope="module")
def finished(quick_run):
  return quick_run  # conftest.py: the quick config trained once per worker


def test_3_a_missing_corpus_leaves_no_workdir_to_refuse_the_corrected_command(tmp_path):
  workdir = tmp_path / "run"
  proc = run("main", QUICK, f"--workdir={workdir}", "--config.dataset.name=tsv:/missing.tsv")
  assert_one_error_line(proc, "dataset.name=tsv:/missing.tsv", "does not exist")
  assert not workdir.exists()  # before: config.json, which refused the corrected command


def test_4_translate_checks_its_output_path_before_decoding(finished, tmp_path):
  out = tmp_path / "missing" / "out.txt"
  proc = run("translate", f"--workdir={finished}", f"--output={out}", input="seven\n")
  assert_one_error_line(proc, str(out), "does not exist")
  # a good --output is written whole, with nothing left beside it
  good = tmp_path / "out.txt"
  proc = run("translate", f"--workdir={finished}", f"--output={good}", input="seven\nthree\n")
  assert proc.returncode == 0, proc.stderr
  assert len(good.read_text().splitlines()) == 2
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_5_a_torn_last_metrics_line_is_dropped_on_resume(finished, tmp_path):
  workdir = tmp_path / "torn"
  shutil.copytree(finished, workdir)
  (workdir / "finished.json").unlink()  # the run did not finish ...
  for path in (workdir / "checkpoints" / "last").iterdir():  # ... it stopped after checkpoint 40
    if int(path.name) > 40:
      shutil.rmtree(path)
  shutil.rmtree(workdir / "checkpoints" / "best")
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  kept = [ln for ln in lines if json.loads(ln)["step"] <= 40]
  # ... and killed while writing the step-50 line
  (workdir / "metrics.jsonl").write_text("".join(ln + "\n" for ln in kept) + '{"step": 50, "spl')
  proc = run("main", QUICK, f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr
  assert "metrics.jsonl:" in proc.stderr and "torn last line" in proc.stderr
  assert metrics(workdir) == metrics(finished)


def test_a_damaged_metrics_line_before_the_last_is_one_error_line(finished, tmp_path):
  workdir = tmp_path / "damaged"
  shutil.copytree(finished, workdir)
  (workdir / "finished.json").unlink()  # a run to resume (a finished one reads nothing)
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  lines[1] = lines[1][:10]
  (workdir / "metrics.jsonl").write_text("".join(ln + "\n" for ln in lines))
  proc = run("main", QUICK, f"--workdir={workdir}")
  assert_one_error_line(proc, f"{workdir / 'metrics.jsonl'}:2")


def test_1_a_run_stopped_between_the_final_saves_repairs_best(finished, tmp_path):
  workdir = tmp_path / "between"
  shutil.copytree(finished, workdir)
  best = workdir / "checkpoints" / "best"
  (workdir / "finished.json").unlink()  # written last: the run did not get there
  shutil.rmtree(best / "60")  # killed after last/60, while best/60 was being written
  (best / "60.orbax-checkpoint-tmp-1").mkdir()
  proc = run("main", QUICK, f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr
  assert "never offered to best" in proc.stderr
  assert sorted(p.name for p in best.iterdir()) == ["60"]  # before: empty, a tmp dir left
  assert metrics(workdir) == metrics(finished)


def test_2_an_unreadable_newest_checkpoint_is_moved_aside_and_written_afresh(finished, tmp_path):
  workdir = tmp_path / "unreadable"
  shutil.copytree(finished, workdir)
  (workdir / "finished.json").unlink()  # killed while saving step 60: not finished
  for f in (workdir / "checkpoints" / "last" / "60" / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(b"garbage")
  proc = run("main", QUICK, f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr
  assert "moved to" in proc.stderr and "resuming from step 40" in proc.stderr
  assert (workdir / "checkpoints" / "damaged" / "last-60").is_dir()
  assert metrics(workdir) == metrics(finished)
  out = run("translate", f"--workdir={workdir}", "--checkpoint=last", input="seven\n")
  assert out.returncode == 0, out.stderr  # before: the garbage step 60 stayed newest


@pytest.mark.parametrize("signum,code", [
    (signal.SIGINT, 130),
    pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow),  # the same path: suite time
])
def test_ctrl_c_and_sigterm_stop_at_a_step_and_say_how_to_resume(finished, tmp_path, signum,
                                                                  code):
  workdir = tmp_path / "stopped"
  proc = subprocess.Popen([sys.executable, "-m", "seq2seq_jax.main", QUICK,
                           f"--workdir={workdir}"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
  marker = workdir / "checkpoints" / "last" / "30"
  deadline = time.time() + 300
  while not marker.is_dir():
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.05)
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == code, err
  last = err.strip().splitlines()[-1]
  assert re.match(rf"error: stopped by {signal.Signals(signum).name} after step \d+; the last "
                  r"checkpoint is step \d+: the same command resumes from it$", last), err
  assert "Traceback" not in err
  assert run("main", QUICK, f"--workdir={workdir}").returncode == 0
  assert metrics(workdir) == metrics(finished)


STACK = ROOT / "tests" / "configs" / "stack_quick.py"


def _member_name(root) -> str:
  listing = run("sweep", f"--config={STACK}:plain", f"--workdir={root}", "--list")
  return listing.stdout.splitlines()[0].split("\t")[2]


def test_7_members_die_with_a_killed_driver(tmp_path):
  root = tmp_path / "sweep"
  name = _member_name(root)
  driver = subprocess.Popen([sys.executable, "-m", "seq2seq_jax.sweep", f"--config={STACK}:plain",
                             f"--workdir={root}", "--index=0"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoint = root / "members" / name / "checkpoints" / "last" / "10"
  deadline = time.time() + 300
  while not checkpoint.is_dir():
    assert driver.poll() is None and time.time() < deadline
    time.sleep(0.05)
  pid = json.loads((root / "status" / f"{name}.json").read_text())["pid"]
  driver.kill()  # SIGKILL: no handler of the driver runs
  driver.wait()
  deadline = time.time() + 60
  while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/status").read_text().find(
      "State:\tZ") < 0:
    assert time.time() < deadline, "the member trains on without its driver"
    time.sleep(0.1)
  status = json.loads((root / "status" / f"{name}.json").read_text())
  assert status["state"] == "interrupted"
  assert run("sweep", f"--config={STACK}:plain", f"--workdir={root}",
             "--index=0").returncode == 0  # and the rerun resumes it


def test_6b_a_5000_token_line_is_dropped_and_counted_before_batching(tmp_path, caplog):
  """With the default config: before, no limit, and every batch padded to 5000."""
  from seq2seq_jax import config_utils, data
  from seq2seq_jax.data import tsv
  long_pair = (" ".join(f"word{i % 50}" for i in range(5000)), "short")
  pairs = [(f"w{i} x{i % 7}", f"v{i} y{i % 5}") for i in range(300)]
  pairs.insert(7, long_pair)
  corpus = tmp_path / "corpus.tsv"
  corpus.write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
  config = config_utils.load_module(ROOT / "configs" / "default.py").get_config()
  config.dataset.name, config.dataset.dev_size, config.dataset.test_size = \
      f"tsv:{corpus}", 20, 20
  assert long_pair in tsv.split_by_hash(pairs, 20, 20)["train"]  # the case under test
  with caplog.at_level("WARNING"):
    dataset = data.load(config.dataset)
  src, tgt = dataset.arrays["train"]
  # 301 pairs, 20 dev, 20 test: 261 for training, less the long one; 2 source words,
  # 2 target words and <eos>
  assert src.shape == (260, 2) and tgt.shape == (260, 3)
  assert "train: dropped 1 of 261 pairs longer than dataset.max_src_len=256" in caplog.text


def test_closed_checkpoints_leave_no_orbax_cleanup_running(tmp_path, monkeypatch):
  """A start stopped just after opening its checkpoints (Ctrl-C at `prepared`)
  closes them and exits: orbax's cleanup of older runs' temporary directories,
  slowed here, must be over by then, or it meets the interpreter's shutdown and
  prints a traceback under the one error line (seen in 1 suite run of 3)."""
  from orbax.checkpoint._src.path import temporary_paths

  from seq2seq_jax.training import checkpoints
  real, finished = temporary_paths.cleanup_temporary_paths, []

  async def slow_cleanup(*args, **kwargs):
    await asyncio.sleep(1.0)
    result = await real(*args, **kwargs)
    finished.append(args[0])
    return result

  monkeypatch.setattr(temporary_paths, "cleanup_temporary_paths", slow_cleanup)
  checkpoints.Checkpoints(tmp_path / "checkpoints", keep=2).close()
  assert sorted(Path(p).name for p in finished) == ["best", "last"]


def test_the_vocabularies_of_a_failed_start_are_not_reused(tmp_path):
  """Issue 32, item 2: a start that fails after the data loaded (a batch larger than
  the corpus) leaves its word vocabularies; before, the corrected command with
  `tokenizer=char` trained on them while its config.json said char."""
  corpus = tmp_path / "pairs.tsv"
  words = ["haus", "baum", "katze", "hund", "auto", "buch"]
  sources = [" ".join(words[i // 6 ** k % 6] for k in range(4)) for i in range(120)]
  corpus.write_text("".join(f"{s}\t{' '.join(reversed(s.split()))}\n" for s in sources))
  workdir = tmp_path / "run"
  common = [QUICK, f"--config.dataset.name=tsv:{corpus}", f"--workdir={workdir}",
            "--config.dataset.dev_size=10", "--config.dataset.test_size=10"]
  assert_one_error_line(run("main", *common, "--config.dataset.tokenizer=word",
                            "--config.train.batch_size=5000"), "train.batch_size=5000")
  assert json.loads((workdir / "vocab_src.json").read_text())["kind"] == "word"  # left behind
  proc = run("main", *common, "--config.dataset.tokenizer=char", "--config.train.num_steps=10",
             "--config.eval.every_steps=10")
  assert proc.returncode == 0, proc.stderr
  for side in ("src", "tgt"):
    vocab = json.loads((workdir / f"vocab_{side}.json").read_text())
    assert vocab["kind"] == "char" and "haus" not in vocab["tokens"], vocab
  assert json.loads((workdir / "config.json").read_text())["dataset"]["tokenizer"] == "char"


def test_damaged_checkpoints_are_one_line_without_orbax_leftovers(finished, tmp_path):
  """Issue 32, item 6: before, the error line sat among dozens of tracebacks of the
  reads still in flight (`RuntimeError: Event loop is closed`, asyncio's `Task
  exception was never retrieved`)."""
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  (workdir / "finished.json").unlink()
  for path in (workdir / "checkpoints").rglob("*"):
    if path.is_file() and path.parent.name == "d":  # the arrays' data files, cut short
      path.write_bytes(path.read_bytes()[:50])
  translate = run("translate", f"--workdir={workdir}", input="three\n")
  assert_one_error_line(translate, "checkpoint 60 in", "best is unreadable (ValueError: ")
  resume = run("main", QUICK, f"--workdir={workdir}")
  assert_one_error_line(resume, "no readable checkpoint in")
  for proc in (translate, resume):
    assert "Event loop is closed" not in proc.stderr and "never retrieved" not in proc.stderr
    assert "<bound method" not in proc.stderr
