"""The backend rule: code that computes on tensors never names NumPy; it asks the backend for ``xp``.

Only ``minigrad/backend.py`` (the one place where NumPy and CuPy meet), ``minigrad/serialization.py``,
``minigrad/torch_checkpoint.py`` and ``minigrad/safetensors_file.py`` (host-side files), and
``minigrad/testing/fake_gpu.py`` (the stand-in GPU, whose arrays are NumPy's inside) may import
NumPy. Checked by parsing, so it holds on machines without a GPU too.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("minigrad", "swin", "optim")
ALLOWED = {"minigrad/backend.py", "minigrad/serialization.py", "minigrad/torch_checkpoint.py",
           "minigrad/safetensors_file.py", "minigrad/testing/fake_gpu.py"}


def is_numpy(module: str | None) -> bool:
    return module is not None and (module == "numpy" or module.startswith("numpy."))


def numpy_imports(source: str, filename: str) -> list[int]:
    """Line numbers of every ``import numpy[.x]`` and ``from numpy[.x] import ...`` in ``source``."""
    lines = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import) and any(is_numpy(alias.name) for alias in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and is_numpy(node.module):
            lines.append(node.lineno)
    return lines


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("source", [
    "import numpy", "import numpy as np", "import os, numpy.linalg", "from numpy import exp",
    "from numpy.random import default_rng", "def f():\n    import numpy as xp\n",
    "try:\n    pass\nexcept ImportError:\n    from numpy import *\n",
])
def test_the_checker_finds_numpy_imports(source):
    assert numpy_imports(source, "example.py")


@pytest.mark.parametrize("source", ["import numbers", "from numpyro import x", "from . import numpy",
                                    "import cupy as numpy_like", "xp = backend.get_array_module(a)"])
def test_the_checker_ignores_other_imports(source):
    assert numpy_imports(source, "example.py") == []


@pytest.mark.parametrize("folder", CHECKED)
def test_no_numpy_import_outside_the_backend(folder):
    if not (ROOT / folder).is_dir():
        if folder == "minigrad":
            pytest.fail("minigrad/ is missing: the rule must be checked on it")
        pytest.skip(f"{folder}/ does not exist yet")
    files = python_files(folder)
    assert files, f"no Python files under {folder}/"
    offences = [f"{path.relative_to(ROOT).as_posix()}:{line}"
                for path in files if path.relative_to(ROOT).as_posix() not in ALLOWED
                for line in numpy_imports(path.read_text(encoding="utf-8"), str(path))]
    assert not offences, ("these import NumPy; ask for the array module instead "
                          "(xp = backend.get_array_module(a)):\n  " + "\n  ".join(offences))


def test_the_backend_imports_cupy_by_that_name():
    # The "gpu" extra installs cupy-cuda12x, but a machine may carry another wheel (cupy-cuda13x):
    # every one of them is imported as ``cupy``.
    tree = ast.parse((ROOT / "minigrad" / "backend.py").read_text(encoding="utf-8"))
    imports = [alias for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert any(alias.name == "cupy" and alias.asname in (None, "cupy") for alias in imports)
    assert not [alias.name for alias in imports if alias.name.startswith("cupy_")]
