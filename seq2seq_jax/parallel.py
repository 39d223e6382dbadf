"""Devices and processes: the mesh a run trains on, the shardings of its state and
batches, and JAX's multi-process runtime.

A run's mesh has two axes: `members` (stacked sweep members, `training.loop`:
member `m`'s arrays live on one row of the mesh) and `data` (data parallelism: every
batch is split along its rows, the state is replicated). `config.mesh.data = 0` uses
every device left over by `members`, so by default a run uses all of them. Batch sizes
must divide by the `data` size (an error says so); evaluation pads its batches.

Several processes (hosts) form one run through `jax.distributed`: each process
holds its local devices' part of every global array and loads only its rows of
every batch (`global_batch`); every array a process reads back (metrics, decoded
tokens) is replicated or gathered first (`to_host`). How many stacked members fit
a device is measured here too (`members_that_fit`).
"""

import logging
import os

import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

log = logging.getLogger(__name__)

AXES = ("members", "data")


def launched_as_many() -> bool:
  """Whether a launcher started this process as one of several: `srun` with
  more than one task, Open MPI, a multi-host TPU slice, or JAX's own variables."""
  env = os.environ
  for name in ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES"):
    if env.get(name, "").isdigit() and int(env[name]) > 1:
      return True
  return "JAX_COORDINATOR_ADDRESS" in env or "," in env.get("TPU_WORKER_HOSTNAMES", "")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Starts `jax.distributed` when this run is one of several processes.

  With an explicit coordinator (the `--coordinator_address`, `--num_processes`,
  `--process_id` flags of the entry points) JAX is told them; otherwise JAX
  detects SLURM, Open MPI or a TPU slice itself, and a process started alone stays
  alone. Must run before any JAX computation. Returns whether it started.
  """
  explicit = [v for v in (coordinator_address, num_processes, process_id) if v is not None]
  if explicit and len(explicit) < 3:
    raise ValueError("--coordinator_address, --num_processes and --process_id go together: "
                     "give all three, or none to let JAX detect the cluster")
  if not explicit and not launched_as_many():
    return False
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  return True


def is_primary() -> bool:
  """Process 0, the one that writes the workdir's files (metrics, reports, plots)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits for every process (a no-op alone)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def make_mesh(mesh_config, members: int = 1) -> jax.sharding.Mesh:
  """The `(members, data)` mesh of `config.mesh` over every device of every process.

  Args:
    mesh_config: `config.mesh`: `data` (0 = every device left over) and `members`.
    members: how many stacked members the run trains (1 for a solo run); a solo
      run has no use for a `members` axis and ignores it.
  """
  devices = jax.device_count()
  along_members = int(mesh_config.members) if members > 1 else 1
  along_data = int(mesh_config.data) or max(1, devices // along_members)
  if along_members * along_data > devices:
    raise ValueError(f"mesh.members={along_members} x mesh.data={along_data} needs "
                     f"{along_members * along_data} devices; there are {devices} "
                     f"({jax.devices()[0].platform}); set mesh.data=0 to use them all")
  if along_members * along_data < devices:
    log.warning("the mesh uses %d of the %d devices (mesh.members=%d, mesh.data=%d)",
                along_members * along_data, devices, along_members, along_data)
  # Auto axes: the compiler propagates the batch split through the model, which
  # is written without sharding annotations (Explicit axes would need them).
  return jax.make_mesh((along_members, along_data), AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(AXES),
                       devices=jax.devices()[:along_members * along_data])


def mesh_shape(mesh: jax.sharding.Mesh) -> dict:
  """`{"data": 4}`, with `members` when that axis is used: for logs and environment.json."""
  shape = dict(mesh.shape)
  return {k: int(v) for k, v in shape.items() if k == "data" or v > 1}


def check_batch_size(batch_size: int, mesh, field: str = "train.batch_size") -> None:
  """A global batch must split evenly over the `data` axis and over the processes."""
  along_data = mesh.shape["data"]
  if batch_size % along_data or batch_size % jax.process_count():
    raise ValueError(f"{field}={batch_size} does not divide over the {along_data} devices of "
                     f"the mesh's data axis ({jax.process_count()} processes): use a multiple "
                     f"of {np.lcm(along_data, jax.process_count())}, or set mesh.data")


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh, stacked: bool = False, accumulated: bool = False) -> NamedSharding:
  """Rows split over `data`; with `stacked`, members (the leading axis) over `members`;
  with `accumulated`, the micro-batches' axis (after the members') is not split."""
  if accumulated:
    return NamedSharding(mesh, P("members", None, "data"))
  return NamedSharding(mesh, P("members", "data") if stacked else P("data"))


def member_sharding(mesh) -> NamedSharding:
  """The stacked state: each member on its row of the mesh, replicated over `data`."""
  return NamedSharding(mesh, P("members"))


def process_rows(batch_size: int) -> slice:
  """This process's rows of a global batch of `batch_size` rows."""
  local = batch_size // jax.process_count()
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def global_batch(local: dict, sharding: NamedSharding) -> dict:
  """A global batch from this process's rows of it (`process_rows`); the rows'
  axis is the leading one, or the second with a stacked `sharding`."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


def rows_multiple(mesh) -> int:
  """Batches split over `mesh` have a multiple of this many rows."""
  return int(np.lcm(mesh.shape["data"], jax.process_count()))


def shard_rows(arrays, mesh) -> list:
  """Whole-batch numpy `arrays` (the same on every process) as global arrays split
  over the mesh's data axis, rows padded with copies of row 0 to `rows_multiple`
  (the caller drops them: it knows how many rows are real)."""
  n = len(arrays[0])
  pad = -n % rows_multiple(mesh)
  if pad:
    arrays = [np.concatenate([a, np.repeat(a[:1], pad, 0)]) for a in arrays]
  rows = process_rows(n + pad)
  sharding = batch_sharding(mesh)
  return [jax.make_array_from_process_local_data(sharding, np.asarray(a)[rows]) for a in arrays]


def to_host(tree):
  """Numpy copies of (possibly sharded, possibly multi-process) arrays, whole on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)

  def whole(x):
    if not isinstance(x, jax.Array) or x.is_fully_replicated:
      return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(whole, tree)


def describe(mesh) -> dict:
  """What environment.json and the first log line say of the devices."""
  device = jax.devices()[0]
  return {"platform": device.platform, "device_kind": device.device_kind,
          "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
          "process_count": jax.process_count(), "process_index": jax.process_index(),
          "mesh": mesh_shape(mesh)}


def summary(described: dict) -> str:
  """One line of `describe`'s dict: `cpu (cpu) x 4 in 1 process, mesh data=4`."""
  mesh = ", ".join(f"{k}={v}" for k, v in described["mesh"].items())
  processes = described["process_count"]
  return (f"{described['platform']} ({described['device_kind']}) x "
          f"{described['device_count']} in {processes} process{'es' if processes > 1 else ''}, "
          f"mesh {mesh}")


def default_vmap_width() -> int | None:
  """How many members a stacked program computes side by side: all on an
  accelerator; on a CPU one at a time (`jax.lax.map`), where one member already
  keeps the cores busy and XLA:CPU's batched kernels were slower per member than
  one member's (measured in `benchmarks/stack.py`)."""
  return 1 if jax.default_backend() == "cpu" else None


def map_members(fn, args, vmap_width: int | None):
  """`fn` over the leading member axis of `args`: `jax.vmap` of all members
  (`vmap_width` None), or `jax.lax.map` over groups of `vmap_width` (1: one by one)."""
  if vmap_width is None:
    return jax.vmap(fn)(*args)
  return jax.lax.map(lambda a: fn(*a), args, batch_size=None if vmap_width == 1 else vmap_width)


MEMORY_FRACTION = 0.7  # of the device's free memory a stack may plan to use


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


def member_footprint_bytes(step_fn, args) -> int:
  """Bytes one member needs: the compiled stacked step's arguments, outputs and
  temporaries for a stack of one (XLA's memory analysis)."""
  stats = jax.jit(step_fn).lower(*args).compile().memory_analysis()
  if stats is None:
    return 0
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes +
             stats.temp_size_in_bytes)


def members_that_fit(step_fn, one_member_args, along_members: int) -> int:
  """How many members one stacked program may hold on this device."""
  footprint = member_footprint_bytes(step_fn, one_member_args)
  fit = along_members * max(1, int(MEMORY_FRACTION * device_memory_bytes() // max(footprint, 1)))
  log.info("one member needs %.1f MB; %d fit in %.1f GB free", footprint / 1e6, fit,
           device_memory_bytes() / 1e9)
  return fit

