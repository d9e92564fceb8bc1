"""pyproject.toml and environment.yml must name the same runtime dependencies and pins."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

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
