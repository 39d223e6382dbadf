"""The package's layers: no import cycles, every module importable, and the
training loop, decoding, evaluation and translate free of RNN internals."""

import ast
from pathlib import Path
import re
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "seq2seq_jax"
CLIS = ("seq2seq_jax.main", "seq2seq_jax.sweep.__main__", "seq2seq_jax.translate",
        "seq2seq_jax.data.__main__")  # each defines its own absl / argparse flags


def module_names(package_dir: Path) -> list[str]:
  """Dotted names of every module under `package_dir` (packages by their `__init__`)."""
  names = []
  for path in sorted(package_dir.rglob("*.py")):
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
  return names


def import_graph(package_dir: Path) -> dict[str, set[str]]:
  """Module -> the package's modules it imports (anywhere in the file)."""
  root = package_dir.name
  modules = set(module_names(package_dir))
  graph = {}
  for name in modules:
    path = package_dir.parent / Path(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        # `from a.b import c` imports module a.b.c if there is one, else names of a.b.
        targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                   else node.module for a in node.names]
      else:
        continue
      edges.update(t for t in targets if t.split(".")[0] == root and t in modules)
    graph[name] = edges - {name}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as `[a, b, ..., a]`, or None (depth-first search)."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_the_package_has_no_import_cycle():
  cycle = find_cycle(import_graph(PACKAGE))
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle(tmp_path):
  """The check above can fail: a package whose a imports b and b imports a."""
  pkg = tmp_path / "pkg"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("")
  (pkg / "a.py").write_text("from pkg.sub import b\n")
  (pkg / "sub" / "b.py").write_text("def f():\n  import pkg.c\n")
  (pkg / "c.py").write_text("import os\nfrom pkg import a\n")
  assert find_cycle(import_graph(pkg)) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
  (pkg / "c.py").write_text("import os\n")
  assert find_cycle(import_graph(pkg)) is None


@pytest.mark.parametrize("group", ["library", *CLIS])
def test_every_module_imports_in_a_fresh_process(group):
  names = [n for n in module_names(PACKAGE) if n not in CLIS] if group == "library" else [group]
  code = "import importlib\n" + "".join(f"importlib.import_module({n!r})\n" for n in names)
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]


# The RNN's own names: a cell registry, a score, input feeding, its output weights.
RNN_NAMES = re.compile(r"\bcells\b|[\"']additive[\"']|input_feeding|out_w|Seq2Seq\(")
FAMILY_FREE = ["training", "decoding.py", "evaluate.py", "translate.py"]


@pytest.mark.parametrize("where", FAMILY_FREE)
def test_family_free_code_names_nothing_of_the_rnn(where):
  paths = sorted((PACKAGE / where).rglob("*.py")) if (PACKAGE / where).is_dir() \
      else [PACKAGE / where]
  hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in paths
          for i, line in enumerate(p.read_text().splitlines(), 1) if RNN_NAMES.search(line)]
  assert not hits, "\n".join(hits)


# The package's layers, lowest first: files -> data -> models -> placement (the
# mesh) -> step -> decoding and evaluation -> loop -> config checks -> CLIs. The
# loop evaluates (it imports evaluation); evaluation knows nothing of training.
# A module may import its own layer's modules and lower ones, never a higher layer's.
# Each module's layer is that of the first pattern it matches (`*`: a package's rest).
LAYERS = [
    ("base", ["seq2seq_jax", "seq2seq_jax.files", "seq2seq_jax.faults", "seq2seq_jax.tokens",
              "seq2seq_jax.ops", "seq2seq_jax.hyper", "seq2seq_jax.config_utils",
              "seq2seq_jax.config_schema", "seq2seq_jax.training", "seq2seq_jax.models.checks"]),
    ("data", ["seq2seq_jax.data.__main__:cli", "seq2seq_jax.data*"]),
    ("models", ["seq2seq_jax.models*", "seq2seq_jax.cells"]),
    ("placement", ["seq2seq_jax.parallel"]),
    ("step", ["seq2seq_jax.training.losses", "seq2seq_jax.training.step",
              "seq2seq_jax.training.optim", "seq2seq_jax.training.schedules",
              "seq2seq_jax.training.stack"]),
    ("decoding", ["seq2seq_jax.decode_options", "seq2seq_jax.decoding", "seq2seq_jax.evaluate",
                  "seq2seq_jax.plots"]),
    ("loop", ["seq2seq_jax.training*"]),
    ("checks", ["seq2seq_jax.config_checks"]),
    ("cli", ["seq2seq_jax.cli", "seq2seq_jax.main", "seq2seq_jax.sweep*",
             "seq2seq_jax.translate", "seq2seq_jax.average"]),
]


def layer_of(module: str) -> int:
  for index, (_, patterns) in enumerate(LAYERS):
    for pattern in patterns:
      pattern, _, override = pattern.partition(":")
      hit = module == pattern or (pattern.endswith("*") and
                                  (module + ".").startswith(pattern[:-1] + "."))
      if hit:
        return index if not override else [n for n, _ in LAYERS].index(override)
  raise AssertionError(f"{module} is in no layer of tests/test_layout.py: LAYERS; add it")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
  """`a (layer) -> b (higher layer)` for every import that climbs."""
  names = [n for n, _ in LAYERS]
  return [f"{a} ({names[layer_of(a)]}) -> {b} ({names[layer_of(b)]})"
          for a in sorted(graph) for b in sorted(graph[a]) if layer_of(b) > layer_of(a)]


def test_imports_only_point_down_the_layers():
  climbing = upward_imports(import_graph(PACKAGE))
  assert not climbing, "imports that climb a layer:\n" + "\n".join(climbing)


def test_the_layer_check_finds_an_import_that_climbs():
  graph = {"seq2seq_jax.evaluate": {"seq2seq_jax.training.loop"},
           "seq2seq_jax.training.loop": {"seq2seq_jax.evaluate"}}
  assert upward_imports(graph) == [
      "seq2seq_jax.evaluate (decoding) -> seq2seq_jax.training.loop (loop)"]


def test_no_module_is_over_400_lines():
  """STYLE.md: a module under about 400 lines (split one that grows past it)."""
  long = [f"{p.relative_to(ROOT)}: {n} lines" for p in sorted(PACKAGE.rglob("*.py"))
          if (n := len(p.read_text().splitlines())) > 400]
  assert not long, "\n".join(long)
