"""atlas: a GPU-accelerated pan-cancer neutrophil atlas.

The import is kept light on purpose: torch, scvi-tools, cupy, rapids-singlecell and
matplotlib are imported inside the functions that need them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("atlas-neutro")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from .core.errors import AtlasError

__all__ = ["AtlasError", "__version__"]
