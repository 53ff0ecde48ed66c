"""TLS in the topology: each setting lands where it is used, relative paths are the topology
folder's, and what cannot work is refused naming the file and the field (exit 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from failover.errors import UserError
from failover.lab.pki import Authority
from failover.postgres.replication import create_subscription_statement, publisher_conninfo
from failover.topology import HttpCheck, load_topology
from tests.support.cli import invoke

EXAMPLE = Path(__file__).resolve().parents[2] / "regions" / "example"
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")


@pytest.fixture
def topo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAILOVER_PG_PASSWORD", "secret")  # the example's endpoints name it
    target = tmp_path / "topology"
    shutil.copytree(EXAMPLE, target)
    return target


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def set_line(path: Path, key: str, value: str) -> None:
    path.write_text("\n".join(f"{key} = {value}" if line.split("=")[0].strip() == key else line
                              for line in path.read_text().splitlines()) + "\n")


def postgres_tls(path: Path, text: str) -> None:
    """`text` inside the region's [postgres.app] table (which ends at its first blank line)."""
    head, tail = path.read_text().split("\n[postgres.app]\n", 1)
    table, rest = tail.split("\n\n", 1)
    path.write_text(f"{head}\n[postgres.app]\n{table}\n{text.strip()}\n\n{rest}")


def verified_everywhere(topo_dir: Path) -> None:
    for region in REGIONS:
        postgres_tls(topo_dir / f"{region}.toml", f"""
sslmode = "verify-full"
sslrootcert = "pg-ca.crt"
sslcert = "tls/failover.crt"
sslkey = "tls/failover.key"
subscription_sslrootcert = "/etc/postgresql/ca-{region}.crt"
""")


def problems_of(path: Path) -> list[str]:
    with pytest.raises(UserError) as info:
        load_topology(path)
    return info.value.problems


# ---------------------------------------------------------------- PostgreSQL


def test_endpoint_tls_goes_into_connections_and_subscriptions(topo_dir: Path) -> None:
    verified_everywhere(topo_dir)
    postgres_tls(topo_dir / "us-west-2.toml", """
subscription_sslcert = "/etc/postgresql/sub.crt"
subscription_sslkey = "/etc/postgresql/sub.key"
""")
    for name in ("pg-ca.crt", "tls/failover.crt", "tls/failover.key"):
        (topo_dir / name).parent.mkdir(exist_ok=True)
        (topo_dir / name).write_text("PEM\n")
    topo = load_topology(topo_dir)
    east, west = topo.endpoint("us-east-1", "app"), topo.endpoint("us-west-2", "app")
    # This host's connections: the files relative to the topology folder.
    mine = conninfo_to_dict(east.conninfo())
    assert (mine["sslmode"], mine["sslrootcert"], mine["sslcert"], mine["sslkey"]) == (
        "verify-full", str(topo_dir / "pg-ca.crt"), str(topo_dir / "tls/failover.crt"),
        str(topo_dir / "tls/failover.key"))
    # us-west-2's server subscribing to us-east-1: the writer's sslmode, the subscriber's
    # own paths on its server, never this host's.
    stored = conninfo_to_dict(publisher_conninfo("app", "us-west-2", east, west))
    assert {k: v for k, v in stored.items() if k.startswith("ssl")} == {
        "sslmode": "verify-full", "sslrootcert": "/etc/postgresql/ca-us-west-2.crt",
        "sslcert": "/etc/postgresql/sub.crt", "sslkey": "/etc/postgresql/sub.key"}
    assert stored["host"] == east.host and stored["application_name"] == "failover_app_us_west_2"
    shown = create_subscription_statement("app", "us-west-2", east, west, copy_data=True,
                                          shown=True).as_string()
    assert "sslrootcert=/etc/postgresql/ca-us-west-2.crt" in shown


def test_no_tls_settings_leave_libpq_its_defaults(topo_dir: Path) -> None:
    topo = load_topology(topo_dir)
    east = topo.endpoint("us-east-1", "app")
    assert not any(k.startswith("ssl") for k in conninfo_to_dict(east.conninfo()))


@pytest.mark.parametrize(("settings", "expected"), [
    ('sslmode = "verify-full"', 'postgres.app: sslmode = "verify-full" checks the server\'s '
     "certificate against the CAs in sslrootcert: set sslrootcert"),
    ('sslmode = "verify-ca"', "set sslrootcert"),
    ('sslcert = "c.crt"', "postgres.app: sslcert and sslkey go together"),
    ('subscription_sslkey = "/k"', "subscription_sslcert and subscription_sslkey go together"),
    ('sslmode = "disable"\nsslrootcert = "ca.crt"', "sslmode = \"disable\" uses no TLS"),
    ('subscription_sslrootcert = "ca.crt"', "subscription_sslrootcert: 'ca.crt' is a path on "
     "this region's PostgreSQL server host"),
    ('sslmode = "verify-everything"', "postgres.app.sslmode: Input should be 'disable'"),
])
def test_endpoint_tls_that_cannot_work_is_refused(topo_dir: Path, settings: str,
                                                  expected: str) -> None:
    postgres_tls(topo_dir / "us-east-1.toml", settings)
    problems = problems_of(topo_dir)
    assert any("us-east-1.toml: " in p and expected in p for p in problems), problems


def test_a_verified_writer_needs_a_ca_on_every_other_server(topo_dir: Path) -> None:
    postgres_tls(topo_dir / "us-east-1.toml", 'sslmode = "verify-full"\nsslrootcert = "ca.crt"')
    problems = problems_of(topo_dir)
    assert sorted(p.split(": ", 1)[0].rsplit("/", 1)[1] for p in problems) == [
        "eu-west-1.toml", "us-west-2.toml"]
    assert ("us-west-2.toml: postgres.app.subscription_sslrootcert: missing; this server "
            "subscribes to us-east-1 when it is the writer of 'app'") in problems[1]


def test_a_tls_file_that_cannot_be_read_is_exit_2_naming_the_field(topo_dir: Path) -> None:
    verified_everywhere(topo_dir)
    topo = load_topology(topo_dir)  # the loader does not read files: each host has its own
    with pytest.raises(UserError, match=r"us-east-1\.toml: postgres\.app\.sslrootcert: cannot "
                                        r"read .*pg-ca\.crt: No such file or directory"):
        topo.endpoint("us-east-1", "app").conninfo()
    env = {"FAILOVER_PG_PASSWORD": "x", "FAILOVER_FLEET_KEY": "k"}
    # Every verb that connects says so before it connects; --strict too.
    lease = invoke("db", "lease", "app", "-t", str(topo_dir), env=env)
    assert lease.code == 2 and "postgres.app.sslrootcert: cannot read" in lease.err
    (topo_dir / "tsig.key").write_text('key "k" { algorithm hmac-sha256; secret "aGk="; };\n')
    strict = invoke("topology", "validate", str(topo_dir), "--strict", env=env)
    assert strict.code == 2
    for region in REGIONS:
        assert f"{region}.toml: postgres.app.sslrootcert: cannot read" in strict.err
        assert f"{region}.toml: postgres.app.sslkey: cannot read" not in strict.err  # the first file an endpoint cannot read


# ---------------------------------------------------------------- the controllers' API


def https_everywhere(topo_dir: Path) -> None:
    for index, region in enumerate(REGIONS, start=1):
        path = topo_dir / f"{region}.toml"
        set_line(path, "controller_url", f'"https://ctl{index}.example.test:8700"')
        append(path, '\n[api]\nlisten = "0.0.0.0:8700"\ncert_file = "ctl.crt"\n'
                     'key_file = "ctl.key"\n')


def test_https_controllers_need_their_certificate_and_the_fleet_a_ca(topo_dir: Path) -> None:
    https_everywhere(topo_dir)
    set_line(topo_dir / "us-west-2.toml", "controller_url", '"http://127.0.2.1:8700"')
    path = topo_dir / "eu-west-1.toml"
    path.write_text(path.read_text().replace('cert_file = "ctl.crt"\nkey_file = "ctl.key"\n', ""))
    problems = problems_of(topo_dir)
    assert len(problems) == 3, problems
    assert ("eu-west-1.toml: api.cert_file: controller_url https://ctl3.example.test:8700 is "
            "https://, so this controller serves TLS") in problems[0]
    assert ("us-west-2.toml: api.cert_file: controller_url http://127.0.2.1:8700 is http://, "
            "so the other controllers and the CLI would speak plain HTTP to a TLS server"
            ) in problems[1]
    assert ("fleet.toml: api.ca_file: the controller URLs of eu-west-1, us-east-1 are https://"
            ) in problems[2]


def test_api_files_are_relative_to_the_topology_folder(topo_dir: Path, tmp_path: Path) -> None:
    https_everywhere(topo_dir)
    append(topo_dir / "fleet.toml", '\n[api]\nca_file = "api-ca.crt"\n')
    authority = Authority(tmp_path / "pki")
    shutil.copy(authority.cert_file, topo_dir / "api-ca.crt")
    for path, name in zip(authority.issue("ctl"), ("ctl.crt", "ctl.key"), strict=True):
        shutil.copy(path, topo_dir / name)
    topo = load_topology(topo_dir)
    assert topo.regions["us-east-1"].api.cert_file == topo_dir / "ctl.crt"
    assert topo.regions["us-east-1"].listen_address == ("0.0.0.0", 8700)
    assert topo.api_client_tls() is not None
    assert topo.api_server_tls("us-east-1") is not None
    (topo_dir / "api-ca.crt").write_text("not a certificate\n")
    with pytest.raises(UserError, match=r"fleet\.toml: api\.ca_file: .* holds no PEM CA"):
        topo.api_client_tls()
    (topo_dir / "ctl.key").unlink()
    with pytest.raises(UserError, match=r"us-east-1\.toml: api\.key_file: cannot read"):
        topo.api_server_tls("us-east-1")


def test_http_controllers_serve_and_call_without_tls(topo_dir: Path) -> None:
    topo = load_topology(topo_dir)
    assert topo.api_client_tls() is None
    assert topo.api_server_tls("us-east-1") is None


# ---------------------------------------------------------------- http checks


def test_http_check_tls_files(topo_dir: Path) -> None:
    path = topo_dir / "us-east-1.toml"
    set_line(path, "url", '"https://127.0.1.1:8700/healthz"')
    append(path, 'ca_file = "web-ca.crt"\ncert_file = "/etc/probe.crt"\nkey_file = "probe.key"\n')
    check = load_topology(topo_dir).regions["us-east-1"].checks[1]
    assert isinstance(check, HttpCheck)
    assert (check.ca_file, check.cert_file, check.key_file) == (
        topo_dir / "web-ca.crt", Path("/etc/probe.crt"), topo_dir / "probe.key")


@pytest.mark.parametrize(("url", "files", "expected"), [
    ("http://127.0.1.1:8700/healthz", 'ca_file = "ca.crt"',
     "ca_file apply to https:// URLs only"),
    ("https://127.0.1.1:8700/healthz", 'cert_file = "c.crt"',
     "cert_file and key_file go together"),
])
def test_http_check_tls_files_that_cannot_work(topo_dir: Path, url: str, files: str,
                                               expected: str) -> None:
    path = topo_dir / "us-east-1.toml"
    set_line(path, "url", f'"{url}"')
    append(path, files + "\n")
    [problem] = problems_of(topo_dir)
    assert "us-east-1.toml: checks[1]: " in problem and expected in problem
