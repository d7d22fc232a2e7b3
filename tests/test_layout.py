"""The package's layout: imports run one way, deployment loads no training stack, no
library module grows past ~400 lines."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "sam2rl_fast"
TRAIN_STACK = ("stable_baselines3", "gymnasium", "tensorboard")


def _imports(path: Path) -> set[str]:
    """Every sam2rl_fast module a file imports, at any depth (function-level too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sam2rl_fast"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("sam2rl_fast")}
    return out


def test_nothing_outside_rl_imports_rl():
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith("rl/") or rel == "cli.py":  # the CLI's `train` command is rl's entry
            continue
        if any(m == "sam2rl_fast.rl" or m.startswith("sam2rl_fast.rl.") for m in _imports(path)):
            offenders.append(rel)
    assert not offenders, offenders


def test_stages_import_down_the_pipeline_only():
    order = ["ops", "model", "memory", "policies", "tracking", "export", "eval", "rl"]
    allowed_up = {("policies", "export")}  # OnnxPolicy opens its session with export's helper
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if len(rel.parts) < 2 or rel.parts[0] not in order:
            continue
        mine = order.index(rel.parts[0])
        for m in _imports(path):
            parts = m.split(".")
            if len(parts) > 1 and parts[1] in order and order.index(parts[1]) > mine \
                    and (rel.parts[0], parts[1]) not in allowed_up:
                bad.append(f"{rel} -> {m}")
    assert not bad, bad


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
