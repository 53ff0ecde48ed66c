"""The wheel holds what the installed package needs, and a fresh venv runs it.

Marked `packaging`: it builds the wheel (`python -m build --wheel --no-isolation`, so
nothing is downloaded: the dev extra brings `build` and setuptools) in a copy of the
sources, then installs it without dependencies into a new venv that borrows this
environment's site-packages for them. A few seconds.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.support.packaging import PYPROJECT, ROOT, build_wheel, install_wheel, run_outside

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("build"))


def expected_files() -> set[str]:
    """Every file of the package as the sources lay it out: the modules and py.typed under
    failover/; the schema, which the code loads from failover/sql/ (`resources.files`
    in failover/postgres/schema.py, the only package data read at runtime); and the
    systemd unit, which a host installs from failover/systemd/ (terraform/modules/region)."""
    package = {f"failover/{path.relative_to(ROOT / 'failover')}"
               for path in (ROOT / "failover").rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    return (package | {f"failover/sql/{path.name}" for path in (ROOT / "sql").glob("*.sql")}
            | {f"failover/systemd/{path.name}"
               for path in (ROOT / "packaging" / "systemd").glob("*.service")})


def test_the_wheel_holds_the_package_its_schema_and_its_license(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert sorted(expected_files() - names) == []
    assert {"failover/py.typed", "failover/sql/001_failover_schema.sql",
            "failover/systemd/failover-controller.service"} <= names
    version = PYPROJECT["project"]["version"]
    info = f"failover-{version}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "failover = failover.cli:main" in entry_points


def test_a_fresh_venv_runs_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    venv = install_wheel(wheel, tmp_path / "venv")
    version = run_outside([venv.bin("failover"), "--version"], cwd=tmp_path).stdout
    assert version == f"failover {PYPROJECT['project']['version']}\n"
    seen = run_outside([venv.python, "-c", "import failover, importlib.metadata as m; "
                        "from failover.postgres.schema import schema_versions; "
                        "print(failover.__file__); print(m.distribution('failover').locate_file('')); "
                        "print(*[v.name for v in schema_versions()])"],
                       cwd=tmp_path).stdout.splitlines()
    assert seen[0].startswith(f"{venv.site}/failover/"), "the wheel's failover is not the one run"
    assert seen[1] == str(venv.site)
    assert seen[2].split() == sorted(path.name for path in (ROOT / "sql").glob("*.sql"))
