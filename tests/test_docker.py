"""The docker images stay consistent with pyproject.toml and the set-up scripts (static: no Docker needed).

The Dockerfiles are parsed (continuation lines joined, ``ARG`` defaults substituted) and checked against
pyproject.toml's extras and torch pin, scripts/setup_env.sh (the CPU torch) and scripts/test_latest.sh
(the Python 3.12 stack of the GPU image). ``hadolint`` lints them where it is installed.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
IMAGES = ("Dockerfile.cpu", "Dockerfile.gpu")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _torch_pin() -> str:
    return next(d for d in _pyproject()["project"]["dependencies"] if d.startswith("torch")).split("==")[1]


def _instructions(name: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile: comments dropped, continuations joined, ARGs expanded."""
    lines, current = [], ""
    for raw in (DOCKER / name).read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        lines.append(current + raw)
        current = ""
    args: dict[str, str] = {}
    out = []
    for line in lines:
        keyword, _, rest = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and "=" in rest:
            key, _, value = rest.strip().partition("=")
            args[key] = value.strip().strip('"')
        rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
        out.append((keyword, rest.strip()))
    return out


def _all(name: str, keyword: str) -> list[str]:
    return [rest for kw, rest in _instructions(name) if kw == keyword]


def _env(name: str) -> dict[str, str]:
    env = {}
    for rest in _all(name, "ENV"):
        for item in shlex.split(rest):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def _pip_installs(name: str) -> list[str]:
    """Every ``pip install ...`` command of the RUN instructions."""
    commands = []
    for rest in _all(name, "RUN"):
        commands += [c.strip() for c in re.split(r"&&|;", rest) if re.search(r"\bpip install\b", c)]
    return commands


def _from(name: str) -> str:
    return _all(name, "FROM")[-1].split()[0]


@pytest.mark.parametrize("name", IMAGES)
def test_extras_installed_exist_in_pyproject(name):
    extras = set(_pyproject()["project"]["optional-dependencies"])
    used = [e for cmd in _pip_installs(name) for m in re.finditer(r'"\.\[([\w,-]+)\]"', cmd)
            for e in m.group(1).split(",")]
    assert used, f"{name} does not install the package with extras"
    assert set(used) <= extras, f"{name} names extras that pyproject.toml lacks: {set(used) - extras}"
    assert {"dask", "cloud"} <= set(used), name
    assert ("gpu" in used) == name.endswith("gpu"), "the gpu extra belongs in the GPU image only"


@pytest.mark.parametrize("name", IMAGES)
def test_torch_pin_equals_pyproject(name):
    pins = [m.group(1) for cmd in _pip_installs(name) for m in re.finditer(r'"torch==([^"]+)"', cmd)]
    assert pins == [_torch_pin()], f"{name}: torch pins {pins}, pyproject.toml pins {_torch_pin()}"
    torch_cmd = next(c for c in _pip_installs(name) if '"torch==' in c)
    assert "--index-url" in torch_cmd, "torch comes from PyTorch's own index (CPU or CUDA build), before atlas"


def test_gpu_image_is_rapids_on_python_312_with_cuda_12_everywhere():
    base = _from("Dockerfile.gpu")
    repo, _, tag = base.partition(":")
    assert repo == "nvcr.io/nvidia/rapidsai/base", base
    assert re.fullmatch(r"\d\d\.\d\d-cuda12(\.\d+)?-py3\.12", tag), base
    gpu_extra = " ".join(_pyproject()["project"]["optional-dependencies"]["gpu"])
    assert "cupy-cuda12x" in gpu_extra and "rapids-singlecell" in gpu_extra
    index = next(a.split("=", 1)[1] for a in _all("Dockerfile.gpu", "ARG") if a.startswith("TORCH_INDEX="))
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu12\d", index), index
    # torch 2.13's CUDA 12 builds are cu126 only (cu128 was dropped in 2.12)
    assert index.endswith("cu126")


def test_gpu_image_installs_the_stack_test_latest_pins():
    defaults = dict(re.findall(r'"([\w-]+)==\$\{\w+:-([\d.]+)\}"', (REPO / "scripts" / "test_latest.sh").read_text()))
    assert set(defaults) == {"scvi-tools", "anndata", "scanpy", "scib-metrics"}, defaults
    install = next(c for c in _pip_installs("Dockerfile.gpu") if '".[' in c)
    for package, version in defaults.items():
        assert f'"{package}=={version}"' in install, f"Dockerfile.gpu should pin {package}=={version}"
    assert re.search(r"TORCH_VERSION=(\S+)", (REPO / "scripts" / "test_latest.sh").read_text()).group(1) == _torch_pin()


def test_cpu_image_is_python_311_with_torch_as_setup_env_installs_it():
    assert _from("Dockerfile.cpu") == "python:3.11-slim"
    setup = (REPO / "scripts" / "setup_env.sh").read_text()
    assert f"TORCH_VERSION={_torch_pin()}" in setup
    cpu_index = re.search(r"--index-url (https://download\.pytorch\.org/whl/cpu)\b", setup).group(1)
    torch_cmd = next(c for c in _pip_installs("Dockerfile.cpu") if '"torch==' in c)
    assert shlex.split(torch_cmd)[-2:] == ["--index-url", cpu_index], torch_cmd
    assert not any("cu12" in c or "cupy" in c for c in _pip_installs("Dockerfile.cpu"))


@pytest.mark.parametrize("name", IMAGES)
def test_entrypoint_user_and_environment(name):
    assert [json.loads(e) for e in _all(name, "ENTRYPOINT")] == [["atlas"]], name
    assert "atlas" in _pyproject()["project"]["scripts"]
    users = _all(name, "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{name} must run as a non-root user"
    env = _env(name)
    assert env.get("PYTHONUNBUFFERED") == "1" and env.get("MPLBACKEND") == "Agg", env
    for key in ("ATLAS_WORK_DIR", "ATLAS_CACHE_DIR", "NUMBA_CACHE_DIR"):
        assert env.get(key, "").startswith("/work/.cache"), f"{name}: {key}={env.get(key)!r}"
    assert any("chmod 1777 /work/.cache" in r for r in _all(name, "RUN")), "the cache volume must be writable"


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: a pattern matches the path or a folder above it; anchored at the
    context root unless it starts with ``**/``; the last matching pattern wins (``!`` re-includes)."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        anywhere = pattern.startswith("**/")
        pattern = pattern[3:] if anywhere else pattern
        starts = range(len(parts)) if anywhere else [0]
        hit = any(fnmatch.fnmatch("/".join(parts[i:j]), pattern)
                  for i in starts for j in range(i + 1, len(parts) + 1))
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_images_copy_and_drops_the_rest():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for name in IMAGES:
        for copy in _all(name, "COPY"):
            sources = [s for s in shlex.split(copy) if not s.startswith("--")][:-1]
            for source in sources:
                assert (REPO / source).exists(), f"{name} copies {source}, which is missing"
                assert not _dockerignored(source, patterns), f"{name} copies {source}, which .dockerignore drops"
    for path in (".git", ".venv", ".venv312", "runs", "bench_data", "atlas/core/__pycache__"):
        assert _dockerignored(path, patterns), f".dockerignore should exclude {path}"


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed")
@pytest.mark.parametrize("name", IMAGES)
def test_hadolint(name):
    # DL3008/DL3013: unpinned apt/pip packages are deliberate (versions come from pyproject.toml's bounds)
    result = subprocess.run(["hadolint", "--ignore", "DL3008", "--ignore", "DL3013", str(DOCKER / name)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
