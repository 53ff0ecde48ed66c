"""Fixtures shared by the whole suite: the real servers, started once per test session."""

pytest_plugins = ["tests.support.pg", "tests.support.bind", "tests.support.etcd"]
