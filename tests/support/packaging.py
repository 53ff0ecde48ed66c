"""failover as a host installs it: the wheel, built offline from a copy of the sources and
installed into a fresh venv, and the settings of the systemd unit under packaging/.

The build is `python -m build --wheel --no-isolation` (nothing is downloaded: the dev extra
brings `build` and setuptools) in a copy of what the build reads, so that build/ and
*.egg-info stay out of the checkout and two builds never share them. The venv gets the
wheel with `--no-deps` and borrows this environment's site-packages for the dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
UNIT = ROOT / "packaging" / "systemd" / "failover-controller.service"


def outside_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without PYTHONPATH (set when running from a worktree, it would import
    the sources instead of the wheel), plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **(extra or {})}


def run_outside(argv: list[str | Path], cwd: Path | None = None,
                timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run `argv` with `outside_env()`; it must exit 0."""
    done = subprocess.run([str(a) for a in argv], check=False, capture_output=True, text=True,
                          env=outside_env(), cwd=cwd, timeout=timeout)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done


def build_wheel(workdir: Path) -> Path:
    """The wheel of the checkout, built in `workdir` (sources/ and dist/ under it)."""
    sources, out = workdir / "sources", workdir / "dist"
    sources.mkdir(parents=True)
    for name in ("pyproject.toml", PYPROJECT["project"]["readme"],
                 *PYPROJECT["project"]["license-files"]):
        shutil.copy(ROOT / name, sources / name)
    for folder in ("failover", "sql", "packaging"):
        shutil.copytree(ROOT / folder, sources / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    run_outside([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out,
                 sources])
    [built] = out.glob("*.whl")
    return built


@dataclass(frozen=True)
class Venv:
    root: Path
    site: Path  # its own site-packages, where the wheel went

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name


def install_wheel(wheel: Path, root: Path) -> Venv:
    """A new venv at `root` with `wheel` installed and this environment's site-packages
    appended after its own (a .pth line), so that the wheel's failover is the one found."""
    run_outside([sys.executable, "-m", "venv", "--without-pip", root])
    python = root / "bin" / "python"
    run_outside([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
                 "--no-deps", "--no-index", wheel])
    site = Path(run_outside([python, "-c", "import sysconfig; "
                             "print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site / "borrowed-dependencies.pth").write_text(
        f"{sysconfig.get_path('purelib')}\n{sysconfig.get_path('platlib')}\n")
    return Venv(root, site)


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, by key, in order (comments and sections left out)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found
