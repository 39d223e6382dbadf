"""The training loop of a stack: K sweep members trained as one program.

`train_and_evaluate_stack(configs, workdirs)` is `run.train_and_evaluate` for
members whose configs share a `stack.stack_key`: each member keeps its own
workdir with the files a solo run writes (config, vocabularies, metrics.jsonl,
TensorBoard events, checkpoints in the solo layout, predictions, report.md,
attention maps), its own data order (its seed's `TrainBatches`), rng and
hyperparameters; one jitted step trains them all, and one call decodes them
all at each evaluation (`stack.map_members`: vmapped on an accelerator, one
member after the other inside the program on a CPU). A member whose loss turns NaN/inf is frozen and
reported failed; the others train on. A killed stack resumes every member from
their newest common checkpoint, exactly.
"""

import json
import logging
import os
from pathlib import Path
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from seq2seq_jax import config_checks, data, evaluate, models
from seq2seq_jax.tokens import PAD_ID
from seq2seq_jax.training import checkpoints, optim, parallel, run, stack, step
from seq2seq_jax.training import workdir as workdir_files

log = logging.getLogger(__name__)

MEMORY_FRACTION = 0.7  # of the device's free memory a stack may plan to use


def check_stackable(configs) -> None:
  """Raises ValueError when the configs cannot share one compiled step."""
  alone = next((stack.trains_alone(c) for c in configs if stack.trains_alone(c)), "")
  if alone:
    raise ValueError(f"a member with {alone} trains alone, not in a stack")
  keys = [json.loads(stack.stack_key(c)) for c in configs]
  other = next((k for k in keys if k != keys[0]), None)
  if other is not None:
    raise ValueError("members of one stack may differ only in " +
                     ", ".join(stack.TRACED_FIELDS) + "; these differ elsewhere: " +
                     _first_difference(keys[0], other))


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
  for key in sorted(set(a) | set(b)):
    if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
      found = _first_difference(a[key], b[key], f"{prefix}{key}.")
      if found:
        return found
    elif a.get(key) != b.get(key):
      return f"{prefix}{key} ({a.get(key)!r} vs {b.get(key)!r})"
  return ""


def _load_shared_data(configs, workdirs) -> data.Dataset:
  """The dataset once (all members share `config.dataset`); every member's
  workdir gets the vocabularies, as a solo run's would."""
  dataset = workdir_files.load_data(configs[0], workdirs[0])
  for workdir in workdirs[1:]:
    for name in ("vocab_src.json", "vocab_tgt.json"):
      own, first = workdir / name, workdirs[0] / name
      if not own.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        own.write_bytes(first.read_bytes())
      elif own.read_bytes() != first.read_bytes():
        raise ValueError(f"{own} differs from {first}: the member was started with another "
                         "vocabulary; use a fresh workdir for it")
  return dataset


def stacked_batch(batches: list, position: int) -> dict:
  """Every member's batch at `position`, padded to the widest and stacked: `[K, batch, len]`.

  With length buckets members can be in different buckets at one step; the extra
  columns are padding, which the models mask (dropout masks over the source then
  differ from a solo run's, as they are drawn for the padded shape).
  """
  parts = [b(position) for b in batches]
  out = {}
  for side in ("src", "tgt"):
    width = max(p[side].shape[1] for p in parts)
    out[side] = np.stack([np.pad(p[side], ((0, 0), (0, width - p[side].shape[1])),
                                 constant_values=PAD_ID) for p in parts])
  return out


def _restore(ckpts, templates) -> tuple[int, list]:
  """Every member's state at the newest checkpoint step they all have (0: none)."""
  common = set.intersection(*[set(c.last.all_steps()) for c in ckpts])
  if not common and any(c.last.all_steps() for c in ckpts):
    log.warning("the members have no checkpoint step in common; all start from step 0")
  for saved in sorted(common, reverse=True):
    try:
      restored = [c.restore(str(saved), t) for c, t in zip(ckpts, templates)]
    except checkpoints.CheckpointError as e:
      log.error("%s; trying an earlier step", e)
      continue
    for (_, meta), c in zip(restored, ckpts):
      if meta["data_position"] != saved:
        raise checkpoints.CheckpointError(f"{c.directory}: checkpoint {saved}: data position "
                                          f"{meta['data_position']} != step")
    log.info("resumed %d members at step %d", len(ckpts), saved)
    return saved, [state for state, _ in restored]
  return 0, templates


def device_memory_bytes() -> int:
  """Free memory of the first device: its allocator's limit less what is in use
  (accelerators), or the machine's available RAM, page cache included (CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def member_footprint_bytes(step_fn, state, batch, rngs, hypers, alive) -> int:
  """Bytes one member needs: the compiled stacked step's arguments, outputs and
  temporaries for a stack of one (XLA's memory analysis)."""
  one = jax.tree.map(lambda x: x[:1], (state, batch, rngs, hypers, alive))
  stats = jax.jit(step_fn).lower(*one).compile().memory_analysis()
  if stats is None:
    return 0
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes +
             stats.temp_size_in_bytes)


def train_and_evaluate_stack(configs: list, workdirs: list,
                             on_member_end: Callable | None = None,
                             max_members: int | None = None,
                             active: list[bool] | None = None) -> list:
  """Trains the members `configs[k]` in `workdirs[k]` as one stack, resuming.

  Args:
    configs: the members' configs, equal but for `stack.TRACED_FIELDS`.
    workdirs: one per member.
    on_member_end: called as `(k, results, error)` when member k finishes
      (`results` by split) or fails (`error`, a one-line message).
    max_members: the most members one program may hold; None measures it (the
      device's free memory over one member's footprint). A larger stack trains
      as several, one after the other.
    active: False for a frozen slot (a member that is not trained now, kept so
      the program is that of the whole stack); its workdir is not touched.

  Returns:
    each member's final results by split, or None for a member that failed.
  """
  for config in configs:
    config_checks.validate(config)
  check_stackable(configs)
  workdirs = [None if w is None else Path(w).resolve() for w in workdirs]
  active = [True] * len(configs) if active is None else list(active)
  workdirs = [w if on else None for w, on in zip(workdirs, active)]
  mesh = parallel.make_mesh(configs[0].get("mesh", parallel.DEFAULT_MESH), len(configs))
  parallel.check_batch_size(configs[0].train.batch_size, mesh)
  along_members = mesh.shape["members"]
  if len(configs) % along_members:  # frozen slots fill the last row of the mesh
    pad = along_members - len(configs) % along_members
    log.info("%d frozen slots make the stack of %d divide over mesh.members=%d", pad,
             len(configs), along_members)
    results = train_and_evaluate_stack(configs + configs[-1:] * pad, workdirs + [None] * pad,
                                       on_member_end, max_members, active + [False] * pad)
    return results[:len(configs)]
  devices = parallel.describe(mesh)
  log.info("devices: %s", parallel.summary(devices))
  for config, workdir in zip(configs, workdirs):
    if workdir is not None:
      workdir_files.check_config(config, workdir, "error")
  dataset = _load_shared_data([c for c, on in zip(configs, active) if on],
                              [w for w in workdirs if w is not None])
  for config, workdir in zip(configs, workdirs):
    if workdir is not None:
      workdir_files.prepare(config, workdir, "error", devices)
  model = models.build(configs[0].model, len(dataset.src_vocab), len(dataset.tgt_vocab))
  tc = configs[0].train
  sampling = any(stack.needs_sampling(c) for c in configs)
  # Members spread over devices are vmapped (the partitioner splits the member axis).
  vmap_width = None if along_members > 1 else stack.default_vmap_width()
  step_fn = stack.make_stacked_train_step(model, tc, sampling, vmap_width)
  batches = [data.TrainBatches(*dataset.arrays["train"], tc.batch_size, c.seed,
                               c.dataset.get("bucket_boundaries", ())) for c in configs]
  if max_members is None and len(configs) > 1:
    probe = _Stack(model, configs[:1], workdirs[:1], batches[:1], open_files=False)
    footprint = member_footprint_bytes(step_fn, *probe.step_args(batches[:1], 0))
    max_members = along_members * max(
        1, int(MEMORY_FRACTION * device_memory_bytes() // max(footprint, 1)))
    log.info("one member needs %.1f MB; %d fit in %.1f GB free", footprint / 1e6,
             max_members, device_memory_bytes() / 1e9)
  if max_members is not None and len(configs) > max_members:
    parts = -(-len(configs) // max_members)
    size = -(-len(configs) // parts // along_members) * along_members
    log.warning("a stack of %d members does not fit the device (at most %d): training %d "
                "stacks of up to %d, one after the other", len(configs), max_members, parts, size)
    results = []
    for start in range(0, len(configs), size):
      end = min(start + size, len(configs))
      def shifted(k, *args, start=start):
        if on_member_end is not None:
          on_member_end(start + k, *args)
      results += train_and_evaluate_stack(configs[start:end], workdirs[start:end], shifted,
                                          max_members=size, active=active[start:end])
    return results
  members = _Stack(model, configs, workdirs, batches, active=active, mesh=mesh)
  by_member = parallel.member_sharding(mesh)
  step_fn = jax.jit(step_fn, in_shardings=(by_member, members.batch_sharding, by_member,
                                           by_member, by_member),
                    out_shardings=by_member, donate_argnums=(0,))
  return members.train(step_fn, dataset, on_member_end)


class _Stack:
  """The members' state, files and bookkeeping for one stacked loop."""

  def __init__(self, model, configs, workdirs, batches, open_files: bool = True,
               active: list[bool] | None = None, mesh=None):
    self.model, self.configs, self.workdirs, self.batches = model, configs, workdirs, batches
    self.mesh = mesh
    self.active = [True] * len(configs) if active is None else active
    tc = configs[0].train
    tx = optim.optimizer_from_config(tc)
    # Each member's initial state as a solo run makes it (same rng, same shapes).
    states = [step.init_state(model, tx, jax.random.PRNGKey(c.seed), b(0))
              for c, b in zip(configs, batches)]
    self.start = 0
    self.ckpts, self.writers = {}, {}
    live = [k for k, on in enumerate(self.active) if on]
    if open_files:
      self.ckpts = {k: checkpoints.Checkpoints(workdirs[k] / "checkpoints", tc.keep_checkpoints)
                    for k in live}
      self.start, restored = _restore([self.ckpts[k] for k in live], [states[k] for k in live])
      for k, state in zip(live, restored):
        states[k] = state
      self.writers = {k: workdir_files.MetricWriter(workdirs[k], self.start) for k in live}
    self.state = stack.stack_trees(states)
    self.rngs = stack.stack_trees([jax.random.PRNGKey(c.seed) for c in configs])
    self.hypers = stack.stack_trees([stack.member_hyper(c) for c in configs])
    if mesh is not None:  # each member on its row of the mesh
      self.batch_sharding = parallel.batch_sharding(mesh, stacked=True)
      self.state, self.rngs, self.hypers = jax.device_put(
          (self.state, self.rngs, self.hypers), parallel.member_sharding(mesh))
    # Frozen slots never train and are never reported.
    self.failed: dict[int, str] = {k: "frozen slot" for k, on in enumerate(self.active) if not on}

  def step_args(self, batches, position):
    alive = jnp.asarray(self.active)
    return self.state, stacked_batch(batches, position), self.rngs, self.hypers, alive

  def _global_batch(self, position):
    """The stacked batch `[K, batch, len]` as one array over the mesh; each device
    takes its block of it."""
    full = stacked_batch(self.batches, position)
    return {side: jax.make_array_from_callback(x.shape, self.batch_sharding,
                                                lambda index, x=x: x[index])
            for side, x in full.items()}

  def live(self) -> list[int]:
    return [k for k in range(len(self.configs)) if k not in self.failed]

  def _log_interval(self, interval, done, seconds, progress, on_member_end) -> None:
    stats = parallel.to_host(interval)
    records = []
    for k in self.live():
      own = [{name: value[k] for name, value in m.items()} for m in stats]
      if not all(m["alive"] for m in own):
        self.failed[k] = "FloatingPointError: " + run.nonfinite_message(
            own, done, self.ckpts[k], self.workdirs[k],
            " (frozen in its stack, the other members trained on)")
        log.error("member %s failed: %s", self.workdirs[k].name, self.failed[k])
        self.writers[k].close()
        if on_member_end is not None:
          on_member_end(k, None, self.failed[k])
        continue
      record = run.train_record(own, done, seconds)
      self.writers[k].write(record)
      records.append(record)
    if records:
      progress.update(done, {"loss": float(np.mean([r["loss"] for r in records])),
                             "tokens_per_s": sum(r["tokens_per_s"] for r in records)})

  def _evaluate(self, dataset, split, done, prefix_of) -> dict:
    results = evaluate.evaluate_members(self.model, self.state.params, len(self.configs),
                                        dataset, split, self.configs[0].eval, self.mesh)
    out = {}
    for k in self.live():
      out[k] = run.record_evaluation(
          self.configs[k], self.model, stack.member_tree(self.state.params, k), dataset, split,
          done, self.writers[k], self.workdirs[k], prefix_of(done), results[k])
    return out

  def _stop(self, signum: int, step_number: int):
    """Completes the saves in flight and raises `run.RunInterrupted`."""
    for c in self.ckpts.values():
      c.wait()
    saved = [c.last.latest_step() for c in self.ckpts.values()]  # the members save together
    for k in self.live():
      self.writers[k].close()
    for c in self.ckpts.values():
      c.close()
    raise run.RunInterrupted(signum, step_number, None if None in saved else min(saved))

  def train(self, step_fn, dataset, on_member_end) -> list:
    tc, cfg_eval = self.configs[0].train, self.configs[0].eval
    progress = workdir_files.Progress(tc.num_steps, self.start)
    t_start, interval, t_interval = time.time(), [], time.time()
    alive = jax.device_put(jnp.asarray(self.active), parallel.member_sharding(self.mesh))
    dev = None
    log.info("training %d members as one stack (%d slots) from step %d", len(self.live()),
             len(self.configs), self.start)
    with run.StopSignals() as stop:  # Ctrl-C and SIGTERM: at a step boundary, as run.py
      for i in range(self.start, tc.num_steps):
        if stop.signum is not None:
          self._stop(stop.signum, i)
        self.state, metrics = step_fn(self.state, self._global_batch(i), self.rngs,
                                      self.hypers, alive)
        alive = metrics["alive"]
        interval.append(metrics)
        done = i + 1
        if done % tc.log_every_steps == 0 or done == tc.num_steps:
          self._log_interval(interval, done, time.time() - t_interval, progress, on_member_end)
          interval, t_interval = [], time.time()
        is_eval = done % cfg_eval.every_steps == 0 or done == tc.num_steps
        if is_eval:
          dev = self._evaluate(dataset, "dev", done, lambda d: "final_dev" if d == tc.num_steps
                               else f"{d:07d}")
          bleus = " ".join(f"{dev[k]['metrics']['bleu']:.2f}" for k in self.live())
          progress.message(f"step {done}: dev BLEU of the members {bleus}")
        if is_eval or done % tc.checkpoint_every_steps == 0:
          for k in self.live():
            self.ckpts[k].save(done, stack.member_tree(self.state, k),
                               {"step": done, "data_position": done},
                               score=dev[k]["metrics"]["bleu"] if is_eval else None)
          t_interval = time.time()  # tokens_per_s counts training time only
    for c in self.ckpts.values():
      c.wait()
    if dev is None:  # resumed after the last step: the dev metrics are already recorded
      results = evaluate.evaluate_members(self.model, self.state.params, len(self.configs),
                                          dataset, "dev", cfg_eval, self.mesh)
      dev = {k: results[k] for k in self.live()}
    test = self._evaluate(dataset, "test", tc.num_steps, lambda d: "final_test")
    finished = [None] * len(self.configs)
    wall = time.time() - t_start
    for k in self.live():
      finished[k] = {"dev": dev[k], "test": test[k]}
      run.write_outputs(self.workdirs[k], self.configs[k], self.model, finished[k], wall)
      self.writers[k].close()
      if on_member_end is not None:
        on_member_end(k, finished[k], None)
    for c in self.ckpts.values():
      c.close()
    return finished
