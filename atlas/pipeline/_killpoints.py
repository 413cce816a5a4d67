"""Test-only crash points: ``ATLAS_TEST_KILL_AT=<stage>:<point>`` SIGKILLs ``atlas run`` there.

The resume tests (tests/pipeline/test_kill_resume.py) use it to make a kill land inside a stage
deterministically. Points:

``<stage>:start``
    the stage has begun (its manifest record is dropped); nothing of it is written yet
``<stage>:rename:<name>``
    a temporary output is complete and about to be renamed onto ``<name>`` (a base name such as
    ``store.h5ad``); outputs the stage renamed earlier are already in place
``<stage>:end``
    all the stage's outputs are in place; the manifest does not record the stage yet

Without the variable (always, outside tests) a stage costs one environment lookup here. The
``rename`` points use a Python audit hook (``os.rename`` covers ``os.replace``), installed only
when the variable names such a point.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from ..core.atomic import TMP_PREFIX

ENV = "ATLAS_TEST_KILL_AT"
_armed: dict[str, str | None] = {"rename": None, "spec": None}
_hook_installed = False


def _spec() -> tuple[str, str] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    stage, _, point = spec.partition(":")
    return stage, point


def _die(where: str) -> None:
    sys.stderr.write(f"{ENV}: killing this process (SIGKILL) at {where}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _on_audit(event: str, args: tuple) -> None:
    name = _armed["rename"]
    if name is None or event != "os.rename":
        return
    src, dst = Path(os.fsdecode(args[0])), Path(os.fsdecode(args[1]))
    if dst.name == name and src.name.startswith(TMP_PREFIX):
        _die(f"{_armed['spec']} (before renaming {src.name})")


@contextlib.contextmanager
def crash_points(stage: str) -> Iterator[None]:
    """Wrap one stage's run: kill at its ``start``, ``rename:<name>`` or ``end`` point when asked."""
    global _hook_installed
    spec = _spec()
    if spec is None or spec[0] != stage:
        yield
        return
    point = spec[1]
    if point == "start":
        _die(f"{stage}:start")
    if point.startswith("rename:"):
        if not _hook_installed:
            sys.addaudithook(_on_audit)
            _hook_installed = True
        _armed["rename"], _armed["spec"] = point.removeprefix("rename:"), f"{stage}:{point}"
    try:
        yield
    finally:
        _armed["rename"] = None
    if point == "end":
        _die(f"{stage}:end")
