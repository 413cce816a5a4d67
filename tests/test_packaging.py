"""The repository's set-up stays consistent: README commands, CI entry, docker images, pyproject."""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_fixed_top_level_exists():
    for name in ("pyproject.toml", "atlas", "tests", "configs", "scripts", "docker"):
        assert (REPO / name).exists(), name


def test_readme_top_shows_exactly_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in first_block.splitlines() if ln.split("#")[0].strip()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()
    assert "atlas demo" in (REPO / "scripts" / "demo.sh").read_text()


def test_torch_pin_is_the_same_everywhere():
    deps = _pyproject()["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("torch")).split("==")[1]
    assert f"TORCH_VERSION={pin}" in (REPO / "scripts" / "setup_env.sh").read_text()
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (REPO / "docker" / dockerfile).read_text()
        assert f'"torch=={pin}"' in text, dockerfile


def test_gpu_packages_are_not_core_dependencies():
    core = " ".join(_pyproject()["project"]["dependencies"])
    assert "cupy" not in core and "rapids" not in core
    assert any(d.startswith("pynndescent") and "<0.7" in d for d in _pyproject()["project"]["dependencies"])


def test_test_fixtures_live_under_tests_not_in_the_package():
    shipped = sorted(str(p.relative_to(REPO)) for p in (REPO / "atlas").rglob("testing.py"))
    assert shipped == [], f"test fixtures belong in tests/helpers, not the wheel: {shipped}"
    assert "tests" in _pyproject()["tool"]["pytest"]["ini_options"]["pythonpath"]
    assert (REPO / "tests" / "helpers" / "__init__.py").exists()
