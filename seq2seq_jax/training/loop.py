"""The training loop: K >= 1 members trained as one compiled program.

A solo run (`run.train_and_evaluate`) is a stack of one; a stacked sweep
(`sweep.worker`) trains K members whose configs share a `stack.stack_key`. Each
member (`members.Member`) keeps the files a solo run writes, its own data order
(its seed's `TrainBatches`), rng, hyperparameters, warm start, early stopper and
plateau; one jitted step trains them all (`stack.make_stacked_train_step`), and one
schedule (they share the step counts) decides when to log, evaluate and save. A
member whose loss turns NaN/inf, or that stops early, is frozen (its update masked
out) while the others train on; a stopped member's best model is evaluated at once,
as its solo run would. A killed stack resumes every member from their newest common
checkpoint, exactly.
"""

import logging
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from seq2seq_jax import config_schema, data, evaluate, faults, models, parallel
from seq2seq_jax.training import optim, records, stack
from seq2seq_jax.training import workdir as workdir_files
from seq2seq_jax.training.members import (
  DONE,
  FAILED,
  STOPPED,
  TRAINING,
  Member,
  held_workdirs,
  interrupt,
  load_shared_data,
  resume_members,
)
from seq2seq_jax.training.signals import StopSignals

log = logging.getLogger(__name__)

def train_members(configs: list, workdirs: list, on_member_end: Callable | None = None,
                  max_members: int | None = None, active: list[bool] | None = None,
                  config_mismatch: str = "error") -> list:
  """Trains the members `configs[k]` in `workdirs[k]` as one stack, resuming.

  Args:
    configs: the members' configs, equal but for `stack.TRACED_FIELDS`.
    workdirs: one per member.
    on_member_end: called as `(k, results, error)` when member k finishes
      (`results` by split) or fails (`error`, a one-line message). Without it a
      failure raises FloatingPointError (a solo run's error).
    max_members: the most members one program may hold; None measures it (the
      device's free memory over one member's footprint). A larger stack trains
      as several, one after the other.
    active: False for a frozen slot (a member that is not trained now, kept so
      the program is that of the whole stack); its workdir is not touched.
    config_mismatch: "allow" resumes a workdir whose config.json differs.

  Returns:
    each member's final results by split, or None for a member that failed.
  """
  configs = [config_schema.build(c) for c in configs]  # as they are if the caller built them
  if len(configs) > 1:
    stack.check_stackable(configs)
  active = [True] * len(configs) if active is None else list(active)
  workdirs = [w if on else None for w, on in zip(workdirs, active)]
  mesh = parallel.make_mesh(configs[0].mesh, len(configs))
  if not configs[0].train.batch_tokens:  # token batches: a multiple of the devices anyway
    parallel.check_batch_size(configs[0].train.batch_size, mesh)
  along_members = mesh.shape["members"]
  if len(configs) % along_members:  # frozen slots fill the last row of the mesh
    pad = along_members - len(configs) % along_members
    log.info("%d frozen slots make the stack of %d divide over mesh.members=%d", pad,
             len(configs), along_members)
    return train_members(configs + configs[-1:] * pad, workdirs + [None] * pad, on_member_end,
                         max_members, active + [False] * pad, config_mismatch)[:len(configs)]
  with held_workdirs(workdirs):  # one process per workdir
    return _train_held(configs, workdirs, on_member_end, max_members, active, config_mismatch,
                       mesh)


def _train_held(configs, workdirs, on_member_end, max_members, active, config_mismatch,
                mesh) -> list:
  """`train_members` once this process holds the members' workdirs."""
  along_members = mesh.shape["members"]
  devices = parallel.describe(mesh)
  log.info("devices: %s", parallel.summary(devices))  # the first line of a run's log
  members = [Member(k, c, w, config_mismatch) for k, (c, w) in enumerate(zip(configs, workdirs))]
  live = [m for m in members if m.training]
  for m in members:
    if m.state == DONE and on_member_end is not None:
      on_member_end(m.slot, m.finished_results(), None)
  if not live:
    return [m.finished_results() if m.state == DONE else None for m in members]
  t_load = time.time()
  for m in live:
    m.start_warm()
  log.info("loading %s (and the vocabularies) ...", configs[0].dataset.name)
  dataset = load_shared_data(live)
  log.info("loaded %d training pairs in %.1f s (%s); vocabularies: %d source, %d target "
           "tokens", len(dataset.arrays["train"][0]), time.time() - t_load,
           "prepared data read, no tokenization" if dataset.prepared.reused else
           "prepared now, read from disk by every later start", len(dataset.src_vocab),
           len(dataset.tgt_vocab))
  faults.point("loaded")
  model = models.build(configs[0].model, len(dataset.src_vocab), len(dataset.tgt_vocab))
  tc = configs[0].train
  tx = optim.optimizer_from_config(tc)
  batches = [data.TrainBatches.from_config(c, dataset, parallel.rows_multiple(mesh))
             for c in configs]
  sampling = any(stack.needs_sampling(c) for c in configs)
  # Members spread over devices are vmapped (the partitioner splits the member axis).
  vmap_width = None if along_members > 1 else parallel.default_vmap_width()
  step_fn = stack.make_stacked_train_step(model, tc, sampling, vmap_width, len(configs))
  t_init = time.time()
  if max_members is None and len(configs) > 1:
    one = (stack.stack_trees([members[0].initial_state(model, tx, batches[0])]),
           stack.stacked_batch(batches[:1], 0, tc.grad_accum_steps),
           stack.stack_trees([jax.random.PRNGKey(0)]),
           stack.stack_trees([stack.member_hyper(configs[0])]), jnp.ones(1, bool))
    max_members = parallel.members_that_fit(step_fn, one, along_members)
  if max_members is not None and len(configs) > max_members:
    return _train_in_parts(configs, workdirs, on_member_end, max_members, active,
                           config_mismatch, along_members)
  states = [m.initial_state(model, tx, b) for m, b in zip(members, batches)]
  log.info("initialised the model (%s parameters) in %.1f s; compiling the training step ...",
           f"{sum(x.size for x in jax.tree.leaves(states[0].params)):,}", time.time() - t_init)
  try:  # a refused warm start, a stop signal: no checkpoint manager or writer left open
    start = resume_members(live, states, tx, devices, log_config=len(configs) == 1)
    loop = _Loop(model, dataset, members, batches, states, start, mesh, step_fn, on_member_end)
  except BaseException:
    for m in live:
      m.close()
    raise
  return loop.train()


def _train_in_parts(configs, workdirs, on_member_end, max_members, active, config_mismatch,
                    along_members) -> list:
  """A stack larger than the device holds, as several stacks one after the other."""
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
    results += train_members(configs[start:end], workdirs[start:end], shifted, size,
                             active[start:end], config_mismatch)
  return results


class _Loop:
  """The stacked state and the schedule of one training loop over `members`."""

  def __init__(self, model, dataset, members, batches, states, start, mesh, step_fn,
               on_member_end):
    self.model, self.dataset, self.members, self.batches = model, dataset, members, batches
    self.start, self.mesh, self.on_member_end = start, mesh, on_member_end
    self.stop = None  # the StopSignals of the step loop, while it runs
    self.configs = [m.config for m in members]
    self.tc, self.cfg_eval = self.configs[0].train, self.configs[0].eval
    self.results = [m.finished_results() if m.state == DONE else None for m in members]
    by_member = parallel.member_sharding(mesh)
    self.micro_batches = self.tc.grad_accum_steps  # [K, micro-batches, rows, len] when > 1
    self.batch_sharding = parallel.batch_sharding(mesh, True, self.micro_batches > 1)
    self.state, self.rngs, self.hypers = jax.device_put(
        (stack.stack_trees(states), stack.stack_trees([jax.random.PRNGKey(c.seed)
                                                       for c in self.configs]),
         stack.stack_trees([m.hyper for m in members])), by_member)
    self.step_fn = jax.jit(step_fn, in_shardings=(by_member, self.batch_sharding, by_member,
                                                  by_member, by_member),
                           out_shardings=by_member, donate_argnums=(0,))
    self.t_start = time.time()

  def training(self) -> list[Member]:
    return [m for m in self.members if m.state == TRAINING]

  def _global_batch(self, position):
    """The stacked batch as one array over the mesh; each device takes its block."""
    full = stack.stacked_batch(self.batches, position, self.micro_batches)
    return {side: jax.make_array_from_callback(x.shape, self.batch_sharding,
                                                lambda index, x=x: x[index])
            for side, x in full.items()}

  def _alive(self):
    return jax.device_put(jnp.asarray([m.state == TRAINING for m in self.members]),
                          parallel.member_sharding(self.mesh))

  def train(self) -> list:
    tc = self.tc
    progress = workdir_files.Progress(tc.num_steps, self.start)
    if len(self.members) > 1:
      log.info("training %d members as one stack (%d slots) from step %d",
               len(self.training()), len(self.members), self.start)
    alive, interval, t_interval, untimed = self._alive(), [], time.time(), None
    done, in_flight = self.start, []
    with StopSignals() as stop:  # Ctrl-C and SIGTERM end the run at a step boundary
      self.stop = stop
      for i in range(self.start, tc.num_steps):
        for m in self.members:
          if m.state == STOPPED and self.training():  # the others train on after it
            self._finish_stopped(m)
        if not self.training():
          break
        if stop.signum is not None:
          interrupt(self.members, stop.signum, i)
        self.state, metrics = self.step_fn(self.state, self._global_batch(i), self.rngs,
                                           self.hypers, alive)
        alive = metrics["alive"]
        # At most one step ahead of the device: dispatched further ahead, the steps ran
        # while a signal's handler waited (a SIGTERM after step 10 stopped after 20).
        in_flight.append(alive)
        if len(in_flight) > 1:
          jax.block_until_ready(in_flight.pop(0))
        interval.append(metrics)
        done = i + 1
        if i == self.start:  # compiled (or read from the cache) on the first call: not training
          jax.block_until_ready(metrics)
          log.info("compiled the training step and ran step %d in %.1f s", done,
                   time.time() - t_interval)
          untimed, t_interval = np.asarray(parallel.to_host(metrics["num_tokens"])), time.time()
          progress.restart(done)
        if done % tc.log_every_steps == 0 or done == tc.num_steps:
          self._log_interval(interval, done, t_interval, untimed, progress)
          interval, t_interval, untimed = [], time.time(), None
        is_eval = done % self.cfg_eval.every_steps == 0 or done == tc.num_steps
        stopping = self._evaluate_dev(done, progress) if is_eval else []
        if is_eval or done % tc.checkpoint_every_steps == 0:
          for m in self.training():
            score = m.dev["metrics"][m.best_metric] if is_eval and m.offer_best else None
            m.ckpt.save(done, stack.member_tree(self.state, m.slot),
                        {"step": done, "data_position": done}, score=score)
          faults.point("saving", done)
          t_interval = time.time()  # tokens_per_s counts training time only
        for m in stopping:
          m.state, m.end = STOPPED, done
          progress.message(f"step {done}: {self._who(m)}{m.stopper.reason()}")
        if stopping:
          alive = self._alive()
      if stop.signum is not None and self.training():  # in the last step: before the finals
        interrupt(self.members, stop.signum, done)
    self.stop = None
    for m in self.members:
      if m.state == STOPPED:
        self._finish_stopped(m)
    self._finish_at_the_last_step()
    return self.results

  def _who(self, m: Member) -> str:
    return f"{m.name}: " if len(self.members) > 1 else ""  # in a log line; solo: no name

  def _log_interval(self, interval, done, t_interval, untimed, progress) -> None:
    stats = parallel.to_host(interval)
    seconds = time.time() - t_interval  # after to_host: the interval's steps have run
    slots = len(self.members)
    written, tokens = [], 0.0
    for m in self.training():
      own = [{name: value[m.slot] for name, value in s.items()} for s in stats]
      if not all(s["alive"] for s in own):
        where = " (frozen in its stack, the other members trained on)" if slots > 1 else ""
        self._fail(m, records.nonfinite_message(own, done, m.ckpt, m.workdir, where))
        continue
      skipped = 0.0 if untimed is None else float(untimed[m.slot])
      # A member's own tokens over the interval's time: how fast it trains in its stack.
      record = records.train_record(own, done, seconds, skipped)
      m.writer.write(record)
      written.append(record)
      tokens += sum(float(s["num_tokens"]) for s in own) - skipped
    faults.point("train_record", done)
    if written:
      progress.update(done, {"loss": float(np.mean([r["loss"] for r in written])),
                             "tokens_per_s": tokens / max(seconds, 1e-9)})

  def _fail(self, m: Member, message: str) -> None:
    m.state, m.error = FAILED, "FloatingPointError: " + message
    if self.on_member_end is None:  # a solo run: its one error line
      raise FloatingPointError(message)
    log.error("member %s failed: %s", m.name, m.error)
    m.writer.close()
    self.on_member_end(m.slot, None, m.error)

  def _evaluate(self, split: str, params, done: int | None = None) -> list[dict]:
    """Every slot's evaluation of `split`: one stacked program (one model for a stack of
    one). In the step loop (at step `done`) a stop signal ends it between two batches."""
    def between_batches():
      faults.point("evaluating", done)
      if self.stop is not None and self.stop.signum is not None:
        interrupt(self.members, self.stop.signum, done)
    hook = between_batches if done is not None else None
    if len(self.members) == 1:
      return [evaluate.evaluate(self.model, stack.member_tree(params, 0), self.dataset, split,
                                self.cfg_eval, self.mesh, hook)]
    return evaluate.evaluate_members(self.model, params, len(self.members), self.dataset, split,
                                     self.cfg_eval, self.mesh, hook)

  def _record(self, m: Member, split: str, done: int, prefix: str, result: dict) -> dict:
    return records.record_evaluation(m.config, self.model,
                                     stack.member_tree(self.state.served, m.slot), self.dataset,
                                     split, done, m.writer, m.workdir, prefix, result)

  def _evaluate_dev(self, done: int, progress) -> list[Member]:
    """Evaluates and records dev; returns the members whose early stopping says stop."""
    results = self._evaluate("dev", self.state.served, done)
    faults.point("evaluated", done)
    prefix = "final_dev" if done == self.tc.num_steps else f"{done:07d}"
    for m in self.training():
      m.dev = self._record(m, "dev", done, prefix, results[m.slot])
    for split in self.dataset.extra_dev:  # a corpus's other dev sets, beside it (no plots)
      extra = self._evaluate(split, self.state.served, done)
      for m in self.training():
        m.extra[split] = self._record(m, split, done, None, extra[m.slot])
    faults.point("dev_record", done)
    stopping, slower = [], [m for m in self.training() if m.plateau.update(done, m.dev["metrics"])]
    for m in slower:  # train.lr_schedule=plateau: a lower rate, a number (no compiling)
      progress.message(f"step {done}: {self._who(m)}{m.plateau.reason(m.hyper['learning_rate'])}")
    if slower:
      self.hypers = jax.device_put(stack.stack_trees([m.hyper for m in self.members]),
                                   parallel.member_sharding(self.mesh))
    for m in self.training():
      metrics = m.dev["metrics"]
      if len(self.members) == 1:
        worst = min(m.dev["exact_match_by_length"], key=lambda r: r["exact_match"])
        progress.message(f"step {done}: dev loss {metrics['loss']:.4f} BLEU {metrics['bleu']:.2f} "
                         f"chrF {metrics['chrf']:.2f} exact match {metrics['exact_match']:.4f} "
                         f"(lowest by source length: {worst['exact_match']:.4f} at "
                         f"{worst['bucket']})")
      if m.stopper.update(done, metrics):
        stopping.append(m)
      m.offer_best = not m.stopping or m.stopper.best_step == done  # only improvements count
    if len(self.members) > 1:
      bleus = " ".join(f"{m.dev['metrics']['bleu']:.2f}" for m in self.training())
      progress.message(f"step {done}: dev BLEU of the members {bleus}")
    return stopping

  def _finish_stopped(self, m: Member) -> None:
    """A member stopped early: its best model evaluated alone, as its solo run does."""
    m.ckpt.wait()
    best, meta = m.ckpt.restore("best", stack.member_tree(self.state, m.slot))
    best = jax.device_put(best, parallel.replicated(self.mesh))
    model_step = int(meta["step"])
    ending = {"step": m.end, "model_step": model_step, "reason": f"{m.stopper.reason()}; "
              f"stopped at step {m.end}, evaluating the model of step {model_step}"}
    if parallel.is_primary() and model_step != self.tc.num_steps:
      records.plots_as_final(m.workdir, model_step)
    dev = evaluate.evaluate(self.model, best.served, self.dataset, "dev", self.cfg_eval,
                            mesh=self.mesh)
    test = records.evaluate_and_record(m.config, self.model, best.served, self.dataset, "test",
                                       model_step, m.writer, m.workdir, "final_test", self.mesh)
    extra = {split: evaluate.evaluate(self.model, best.served, self.dataset, split,
                                      self.cfg_eval, mesh=self.mesh)
             for split in self.dataset.extra_dev}
    self._complete(m, {"dev": dev, "test": test, **extra}, ending)

  def _finish_at_the_last_step(self) -> None:
    """The members that trained to `num_steps`: their dev results (recorded at the
    last step, or evaluated now if this run resumed there) and test, recorded."""
    last = self.tc.num_steps
    finishing = self.training()
    if not finishing:
      return
    for m in finishing:
      m.ckpt.wait()
    if any(m.dev is None for m in finishing):  # resumed after the last step
      results = self._evaluate("dev", self.state.served)
      for m in finishing:
        m.dev = m.dev or results[m.slot]
    for split in self.dataset.extra_dev:
      if any(split not in m.extra for m in finishing):  # (as dev)
        results = self._evaluate(split, self.state.served)
        for m in finishing:
          m.extra.setdefault(split, results[m.slot])
    test = self._evaluate("test", self.state.served)
    faults.point("evaluated", last)
    for m in finishing:
      result = self._record(m, "test", last, "final_test", test[m.slot])
      self._complete(m, {"dev": m.dev, "test": result, **m.extra},
                     {"step": last, "model_step": last, "reason": "num_steps"})

  def _complete(self, m: Member, results: dict, ending: dict) -> None:
    faults.point("test_record")
    records.write_outputs(m.workdir, m.config, self.model, results, time.time() - self.t_start,
                          ending)
    faults.point("outputs")
    log.info("%sdone at step %d: %s; report: %s", self._who(m), ending["step"], "; ".join(
        f"{split} BLEU {r['metrics']['bleu']:.2f} exact match {r['metrics']['exact_match']:.4f}"
        for split, r in results.items()), m.workdir / "report.md")
    m.state = DONE
    m.close()
    self.results[m.slot] = results
    if self.on_member_end is not None:
      self.on_member_end(m.slot, results, None)
