"""Keep the command line's terminal to atlas's own lines.

The libraries atlas drives are chatty: Lightning prints ``GPU available: ...``, ``TPU available:
...``, ``Seed set to 0``, a "Tip: ... litlogger" advertisement and a ``Trainer.fit stopped`` line at
INFO, and third-party modules raise deprecation warnings (``LeafSpec``) the user cannot act on.
:func:`quiet_third_party` (called by the CLI, never on import of :mod:`atlas`) keeps their loggers
at WARNING and ignores warnings raised outside atlas, unless ``--verbose``.

Lightning, Lightning Fabric and scvi-tools reset their loggers to INFO when they are imported, which
for the CLI happens lazily, long after logging was set up. A small import hook re-applies the levels
right after those packages are imported, so no heavy import is paid up front.
"""

from __future__ import annotations

import logging
import sys
import warnings
from importlib.abc import MetaPathFinder

__all__ = ["NOISY_LOGGERS", "quiet_third_party"]

#: third-party loggers kept at WARNING unless --verbose (then INFO)
NOISY_LOGGERS = (
    "scvi",
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning_fabric",
    "numba",
    "h5py",
    "anndata",
)
#: packages whose import resets their loggers' levels (the levels are re-applied after it)
_RESETTING = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric", "scvi")
#: warnings raised from modules not matching this are ignored unless --verbose
_NOT_ATLAS = r"(?!atlas(\.|$))"

_state = {"level": logging.WARNING, "verbose": False}


def _apply() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(_state["level"])
    # (re)inserted first, so it wins over filters the libraries add when imported
    warnings.filterwarnings("default" if _state["verbose"] else "ignore", module=_NOT_ATLAS)


class _ThenQuiet:
    """Wraps a package's loader: runs it, then re-applies the levels the package just reset."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _apply()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _AfterImport(MetaPathFinder):
    """Meta-path finder that wraps the loaders of the :data:`_RESETTING` packages."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _RESETTING:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenQuiet(spec.loader)
                return spec
        return None


def quiet_third_party(verbose: bool) -> None:
    """Third-party loggers at WARNING and third-party warnings ignored (both shown with ``verbose``).

    Parameters
    ----------
    verbose
        The CLI's ``--verbose``: third-party loggers at INFO (their DEBUG is a flood of hook calls)
        and warnings shown.
    """
    _state["verbose"] = verbose
    _state["level"] = logging.INFO if verbose else logging.WARNING
    if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
    _apply()
