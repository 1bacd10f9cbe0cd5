"""The benchmarks and experiment scripts under examples/ run rarely (`make bench`, `make demo`);
every name they import from abcscribe, even inside a function, must still exist, so a rename
in the package fails here rather than in the next benchmark run."""

import ast
import importlib

import pytest

from conftest import ROOT

# generated, untracked trees are not examples: run folders, and the venv peers.py makes
SCRIPTS = sorted(p for p in (ROOT / "examples").rglob("*.py")
                 if "runs" not in p.parts and ".venv-basic-pitch" not in p.parts)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_abcscribe_name_an_example_imports_exists(script):
    tree = ast.parse(script.read_text(), filename=str(script))
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("abcscribe"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:  # a submodule: from abcscribe.core import reward
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{node.module}.{alias.name} (line {node.lineno})")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("abcscribe"):
                    importlib.import_module(alias.name)
    assert not missing, missing


def test_the_scan_finds_the_benchmarks():
    assert any(p.name == "transcribe.py" for p in SCRIPTS) and len(SCRIPTS) >= 8
