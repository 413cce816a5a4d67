"""Small simulations shared by the simulator tests (built once per session)."""

from __future__ import annotations

import pytest

from atlas.simulate import simulate

SMALL = {"n_cells": 2400, "n_datasets": 7, "n_genes": 2500}


@pytest.fixture(scope="session")
def small() -> dict:
    """Parameters of the small simulations (besides seed and chunk size)."""
    return dict(SMALL)


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    """A 7-data-set simulation (seed 0, chunks of about 300 cells, 2 threads)."""
    return simulate(tmp_path_factory.mktemp("sim") / "a", seed=0, chunk_size=300, n_jobs=2, **SMALL)


@pytest.fixture(scope="session")
def sim_rechunked(tmp_path_factory):
    """The same simulation written with another chunk size and one thread."""
    return simulate(tmp_path_factory.mktemp("sim") / "b", seed=0, chunk_size=700, n_jobs=1, **SMALL)


@pytest.fixture(scope="session")
def sim_other_seed(tmp_path_factory):
    """The same parameters with another seed."""
    return simulate(tmp_path_factory.mktemp("sim") / "c", seed=1, chunk_size=20_000, **SMALL)
