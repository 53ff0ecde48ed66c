"""Fixtures shared by the whole suite: the real servers, started once per test session."""

import pytest

pytest_plugins = ["tests.support.pg", "tests.support.bind", "tests.support.etcd"]

# Files that take minutes run first. `scripts/test.sh` hands whole files to two workers in
# collection order (`--dist loadfile --no-loadscope-reorder`); xdist's own order puts files
# with fewer tests last, so the Terraform apply (one test, over three minutes) used to
# start near the end and run alone.
SLOW_FILES_FIRST = (
    "tests/integration/test_terraform_moto.py",
    "tests/integration/test_terraform_modules.py",
    "tests/unit/test_cli_fuzz.py",
    "tests/integration/test_newcomer.py",
    "tests/integration/test_postgres_cli.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return SLOW_FILES_FIRST.index(path) if path in SLOW_FILES_FIRST else len(SLOW_FILES_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
