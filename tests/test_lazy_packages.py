"""The lazy packages (their public names in ``__init__.pyi``, loaded by lazy_loader on first use)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

LAZY = ["atlas.integrate", "atlas.query", "atlas.score"]


@pytest.mark.parametrize("name", LAZY)
def test_every_public_name_resolves_and_unknown_ones_raise(name):
    pkg = importlib.import_module(name)
    assert len(pkg.__all__) >= 5 and sorted(dir(pkg)) == sorted(pkg.__all__)
    for attr in pkg.__all__:
        assert getattr(pkg, attr) is not None, attr
    with pytest.raises(AttributeError):
        _ = pkg.no_such_name


@pytest.mark.parametrize("name", LAZY)
def test_importing_a_lazy_package_loads_none_of_its_submodules(name):
    code = f"import sys, {name}; print(sorted(m for m in sys.modules if m.startswith('{name}.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
