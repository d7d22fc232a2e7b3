"""The package's layout: imports point down its layers and form no circle (function-level
and relative imports included), the scripts (train/, export/, benchmarks/) import the
package and never the reverse, deployment loads no training stack, no library module
grows past ~400 lines."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "sam2rl_fast"
PKG = ROOT / PACKAGE
SCRIPT_DIRS = ("train", "export", "benchmarks")
TRAIN_STACK = ("stable_baselines3", "gymnasium", "tensorboard")

# The package's layers, lowest first, by the first name below sam2rl_fast ("" is its
# __init__): a module imports from its own layer or lower ones only. The stages follow the
# data flow; every module must be placed here.
LAYERS = [
    ("_version", "_build_config", "_atomic", "outputs", "run_folder"),  # no package imports
    ("_extension",),
    ("",),  # sam2rl_fast/__init__.py: its public names load lazily, from the stages
    ("runtime",),  # onnxruntime sessions, for policies and export alike
    ("ops",),
    ("model",),
    ("memory",),
    ("policies",),
    ("tracking",),
    ("data",),
    ("export",),
    ("eval",),
    ("rl",),
    ("testing",),  # builders for tests and benchmarks: nothing in the library imports them
    ("cli_args",),
    ("cli",),
]


# ---- the import graph ---------------------------------------------------------------------


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).parts)
    parts[-1] = parts[-1].split(".")[0]  # x.py, and x.py.in (a module the build generates)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(base: Path, top: Path) -> dict[str, Path]:
    """Dotted name (relative to `base`) -> file, of every module under `top`."""
    files = [*top.rglob("*.py"), *top.rglob("*.py.in")]
    return {_module_name(p, base): p for p in sorted(files)
            if not {"runs", "__pycache__"} & set(p.relative_to(top).parts)}


def _lazy_names(init: Path) -> dict[str, str]:
    """A package __init__'s PEP 562 table (`_LAZY = {name: module}`), if it has one."""
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def imported_names(path: Path, name: str) -> list[tuple[str, str | None]]:
    """(absolute dotted name, the name taken from it or None) of every import in a file at
    any depth (function-level too), relative ones resolved against module `name`, and of
    `importlib.import_module("literal")` calls."""
    if path.suffix == ".in":  # a template the build fills in: it imports nothing
        return []
    package = name.split(".") if path.name.startswith("__init__.py") else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out += [(mod, a.name) for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            out.append((node.args[0].value, None))
    return out


def _resolve(mod: str, taken: str | None, modules, lazy=None) -> str | None:
    """The module of `modules` an import reaches: `from mod import taken` is module
    mod.taken when there is one, a lazy public name its defining module, else mod; None
    when that is no module of `modules` (the parent packages an import runs first are
    not counted: every module has them)."""
    if taken is not None:
        if f"{mod}.{taken}" in modules:
            return f"{mod}.{taken}"
        if lazy and mod in lazy and taken in lazy[mod]:
            return lazy[mod][taken]
    return mod if mod in modules else None


def import_graph(root: Path, package: str, script_dirs=(), compiled=()) -> tuple[dict, dict, dict]:
    """(graph, roots, unknown): graph {node: set of nodes it imports}, nodes being the
    package's modules ("pkg.a.b") and the scripts' ("train/demo_trainer.run"); roots
    {node: the first names of every import it makes}; unknown {node: package modules it
    imports that have no source here, the `compiled` extensions aside}. A script imports
    its own folder's modules (the folder is on sys.path when it runs), the other script
    folders' and the package."""
    pkg = _modules(root, root / package)
    lazy = {package: _lazy_names(root / package / "__init__.py")} if (root / package / "__init__.py").is_file() else {}
    scripts = {d: _modules(root / d, root / d) for d in script_dirs if (root / d).is_dir()}
    files = {m: (p, m) for m, p in pkg.items()}
    for d, mods in scripts.items():
        files |= {f"{d}/{m}": (p, m) for m, p in mods.items()}
    graph, roots, unknown = {}, {}, {}
    for node, (path, name) in files.items():
        here = node.split("/")[0] if "/" in node else None
        edges, first = set(), set()
        for mod, taken in imported_names(path, name):
            first.add(mod.split(".")[0])
            if mod.split(".")[0] == package:
                target = _resolve(mod, taken, pkg, lazy)
                if target is None and mod not in compiled:
                    unknown.setdefault(node, set()).add(mod)
            elif here is not None:
                if mod.split(".")[0] == here:
                    mod = mod.partition(".")[2]
                target = None
                for d in [here, *(x for x in scripts if x != here)]:
                    if mod and (hit := _resolve(mod, taken, scripts[d])) is not None:
                        target = f"{d}/{hit}"
                        break
            else:
                target = None
            if target is not None and target != node:
                edges.add(target)
        graph[node], roots[node] = edges, first
    return graph, roots, unknown


def find_cycles(graph: dict) -> list[list[str]]:
    """Import circles of `graph`, each as a path [a, b, ..., a] (one per back edge found)."""
    state, stack, cycles = {}, [], []

    def visit(v):
        state[v] = "open"
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == "open":
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in state:
                visit(w)
        stack.pop()
        state[v] = "done"

    for v in sorted(graph):
        if v not in state:
            visit(v)
    return cycles


def _layer(module: str, package: str, layers) -> int | None:
    key = module[len(package) + 1:].split(".")[0] if module != package else ""
    return next((i for i, names in enumerate(layers) if key in names), None)


def upward_imports(graph: dict, package: str, layers) -> list[str]:
    """Package imports that point to a higher layer, and modules placed in no layer."""
    bad = []
    for a in sorted(m for m in graph if "/" not in m):
        la = _layer(a, package, layers)
        if la is None:
            bad.append(f"{a}: in no layer (place it in LAYERS)")
            continue
        for b in sorted(graph[a]):
            lb = _layer(b, package, layers)
            if lb is not None and lb > la:
                bad.append(f"{a} -> {b} (layer {layers[la]} imports the higher {layers[lb]})")
    return bad


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT, PACKAGE, SCRIPT_DIRS, compiled={f"{PACKAGE}._C"})


# ---- the rules ----------------------------------------------------------------------------


def test_every_import_of_the_package_names_one_of_its_modules(graph):
    assert not graph[2], graph[2]  # else the graph would miss what it imports


def test_no_import_circles(graph):
    cycles = find_cycles(graph[0])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_layers(graph):
    bad = upward_imports(graph[0], PACKAGE, LAYERS)
    assert not bad, "\n".join(bad)


def test_nothing_outside_rl_imports_rl(graph):
    rl = f"{PACKAGE}.rl"
    offenders = [f"{a} -> {b}" for a, targets in graph[0].items() for b in targets
                 if (b == rl or b.startswith(rl + ".")) and "/" not in a
                 and not (a == rl or a.startswith(rl + ".")) and a != f"{PACKAGE}.cli"]
    assert not offenders, offenders  # the CLI's `train` command is rl's entry


def test_the_package_imports_no_script_and_no_test(graph):
    g, roots, _ = graph
    script_names = {m.split("/")[1].split(".")[0] for m in g if "/" in m}
    forbidden = {"tests", *SCRIPT_DIRS, *script_names}
    bad = {m: sorted(roots[m] & forbidden) for m in g if "/" not in m and roots[m] & forbidden}
    assert not bad, bad


def test_scripts_import_no_tests(graph):
    g, roots, _ = graph
    bad = sorted(m for m in g if "/" in m and "tests" in roots[m])
    assert not bad, bad  # shared builders live in sam2rl_fast.testing or benchmarks/_timing.py


def test_the_checker_finds_circles_and_upward_imports(tmp_path):
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
    files = {
        "pkgx/__init__.py": "",
        "pkgx/low/__init__.py": "from . import m\n",
        "pkgx/low/m.py": "def f():\n    from ..high import h\n    return h\n",
        "pkgx/high/__init__.py": "import pkgx.gone\n",  # no such module
        "pkgx/high/h.py": "import pkgx.low.m\n",
        "bench/run.py": "import _shared\nfrom tests.helpers import x\n",
        "bench/_shared.py": "def g():\n    import run\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    g, roots, unknown = import_graph(tmp_path, "pkgx", ("bench",))
    assert g["pkgx.low"] == {"pkgx.low.m"} and g["pkgx.low.m"] == {"pkgx.high.h"}
    assert sorted(map(tuple, find_cycles(g))) == [
        ("bench/_shared", "bench/run", "bench/_shared"),
        ("pkgx.high.h", "pkgx.low.m", "pkgx.high.h")]
    layers = [("",), ("low",), ("high",)]
    assert upward_imports(g, "pkgx", layers) == [
        "pkgx.low.m -> pkgx.high.h (layer ('low',) imports the higher ('high',))"]
    assert upward_imports(g, "pkgx", layers[:2])[0] == "pkgx.high: in no layer (place it in LAYERS)"
    assert "tests" in roots["bench/run"] and unknown == {"pkgx.high": {"pkgx.gone"}}


def test_the_version_is_pyprojects():
    from sam2rl_fast._version import __version__

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert __version__ == meta["project"]["version"]


# ---- what loads, and module sizes ---------------------------------------------------------


@pytest.mark.parametrize("code", [
    "import sam2rl_fast; sam2rl_fast.build_info()",
    "from sam2rl_fast import FastTracker",
    "from sam2rl_fast.policies.onnx import OnnxPolicy",
    "from sam2rl_fast.policies import make_policy",
    "from sam2rl_fast.cli import main; main(['info'])",
])
def test_tracking_and_onnx_agents_load_no_training_stack(code):
    probe = f"import sys\n{code}\nprint([m for m in {TRAIN_STACK!r} if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr  # info exits 1 without a built extension
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout


def test_no_library_module_is_over_400_lines():
    long = {p.relative_to(PKG).as_posix(): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
