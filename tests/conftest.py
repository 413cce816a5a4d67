"""Shared test fixtures and markers."""

from __future__ import annotations

import logging

import pytest


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` unless cupy can use a CUDA GPU (the probe of ``atlas.core.backend``)."""
    if not any("gpu" in item.keywords for item in items):
        return  # no probe (no cupy import) when no GPU test was collected
    from atlas.core.backend import gpu_status

    ok, why = gpu_status()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"no CUDA GPU answers: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _atlas_logger_restored():
    """The CLI run in-process takes over the ``atlas`` logger (its own handler, no propagation): restore it
    after every test, so ``caplog`` sees atlas's records whatever ran before in the same process."""
    log = logging.getLogger("atlas")
    saved = (log.handlers[:], log.propagate, log.level)
    yield
    log.handlers[:] = saved[0]
    log.propagate = saved[1]
    log.setLevel(saved[2])
