"""Reading a topology folder: every problem at once, each naming the file, the field and what to do."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from itertools import combinations
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from failover.errors import UserError
from failover.topology.models import (
    CHECK_KINDS,
    FLEET_FILE,
    TLS_FILE_FIELDS,
    VERIFYING_SSLMODES,
    Fleet,
    HttpCheck,
    PostgresCheck,
    Region,
    Topology,
)

M = TypeVar("M", bound=BaseModel)
# The files of an endpoint that this host reads (its subscription_* files are the server's).
ENDPOINT_FILE_FIELDS = ("password_file", "sslrootcert", "sslcert", "sslkey")


def _read_toml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: malformed TOML: {exc}")
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text (byte {exc.start}); TOML files must be UTF-8: "
                        "save it again as UTF-8")
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
    return None


def _field_path(loc: Iterable[int | str]) -> str:
    out = ""
    parts = list(loc)
    for index, part in enumerate(parts):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in CHECK_KINDS and index > 0 and isinstance(parts[index - 1], int):
            continue  # the discriminated union's tag: the user never wrote it
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _validation_problems(path: Path, exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see regions/example/ for the fields)"
        elif error["type"] == "union_tag_invalid":
            message = f"unknown check kind; expected one of {', '.join(CHECK_KINDS)}"
        elif error["type"] == "union_tag_not_found":
            message = f"missing kind; expected one of {', '.join(CHECK_KINDS)}"
        problems.append(f"{path}: {_field_path(error['loc'])}: {message}")
    return problems


def _cross_checks(fleet_path: Path, fleet: Fleet, regions: dict[str, Region],
                  files: dict[str, Path], *, all_regions_loaded: bool) -> list[str]:
    """Problems between files; region membership is judged only when every region file
    loaded, so that one broken file does not echo as a cascade of false problems."""
    problems: list[str] = []
    n = len(regions)
    if fleet.quorum is not None:
        if fleet.quorum > n:
            problems.append(f"{fleet_path}: quorum: {fleet.quorum} is larger than the fleet "
                            f"({n} regions); use at most {n}")
        elif fleet.quorum <= n // 2:
            problems.append(f"{fleet_path}: quorum: {fleet.quorum} of {n} is not a strict majority, "
                            f"so two halves could both act; use at least {n // 2 + 1}")
    seen: set[str] = set()
    for index, service in enumerate(fleet.services):
        where = f"{fleet_path}: services[{index}]"
        if service.name in seen:
            problems.append(f"{where}.name: service {service.name!r} is defined twice")
        seen.add(service.name)
        members = service.regions if service.regions is not None else list(regions)
        for name in members if all_regions_loaded else []:
            if name not in regions:
                problems.append(f"{where}.regions: unknown region {name!r} "
                                f"(known: {', '.join(regions) or 'none'})")
            elif service.name not in regions[name].postgres:
                problems.append(f"{files[name]}: postgres.{service.name}: missing; region {name!r} "
                                f"takes part in service {service.name!r} and needs its endpoint")
        if len(members) < 2 and all_regions_loaded:
            problems.append(f"{where}.regions: a service needs at least two regions to fail over")
        elif (service.durability == "sync" and all_regions_loaded
                and service.sync_count > len(members) - 1):
            problems.append(f"{where}.sync_count: {service.sync_count} is more than the "
                            f"{len(members) - 1} other regions of service {service.name!r}, so no "
                            "commit could ever be acknowledged; use at most "
                            f"{len(members) - 1}")
        zone = fleet.dns.zone
        if zone is not None:
            for attr in ("writer_record", "reader_record"):
                record = getattr(service, attr)
                if record is not None and not (record == zone or record.endswith("." + zone)):
                    problems.append(f"{where}.{attr}: {record} is outside the zone {zone}")
    for name, region in regions.items():
        for service_name in region.postgres:
            if service_name not in seen:
                problems.append(f"{files[name]}: postgres.{service_name}: no service "
                                f"{service_name!r} in {fleet_path}")
        for index, check in enumerate(region.checks):
            if isinstance(check, PostgresCheck) and check.service not in region.postgres:
                problems.append(f"{files[name]}: checks[{index}].service: region {name!r} has no "
                                f"postgres.{check.service} endpoint to check")
    problems += _timing_problems(fleet_path, fleet, regions)
    problems += _shared_values(regions, files, "address", "DNS would send the clients of one "
                               "region to the database of the other")
    problems += _shared_values(regions, files, "controller_url", "one controller would answer "
                               "for two regions")
    problems += _shared_server_problems(fleet_path, fleet, regions)
    problems += _tls_problems(fleet_path, fleet, regions, files)
    if not regions and all_regions_loaded:
        problems.append(f"{fleet_path.parent}: no <region>.toml files; a fleet needs regions")
    return problems


_DETECTION = ("the fastest liveness check's interval, then unhealthy_threshold - 1 more "
              "probes at its fast_interval, else its interval")


def _timing_problems(fleet_path: Path, fleet: Fleet, regions: dict[str, Region]) -> list[str]:
    """Timings that cannot work together; each message says what would go wrong."""
    problems: list[str] = []
    max_age = fleet.observation_max_age
    exchange = fleet.coordination.exchange_interval
    if max_age <= exchange:
        problems.append(
            f"{fleet_path}: observation_max_age: {max_age:g} s must be longer than "
            f"coordination.exchange_interval ({exchange:g} s): observations arrive once an "
            "exchange, so each would be stale before the next came, no controller would keep a "
            "quorum and every writer would fence itself")
    liveness = [check for region in regions.values() for check in region.liveness_checks]
    if not liveness:
        return problems
    detection = min(check.detection_time for check in liveness)
    if fleet.self_fence_after >= detection:
        problems.append(
            f"{fleet_path}: self_fence_after: {fleet.self_fence_after:g} s must be shorter than the "
            f"{detection:g} s the fleet needs to declare a region DOWN ({_DETECTION}), or the "
            "old primary could still take writes when the new one starts")
    if max_age > detection:
        problems.append(
            f"{fleet_path}: observation_max_age: {max_age:g} s must be at most the {detection:g} s "
            f"the fleet needs to declare a region DOWN ({_DETECTION}): a cut-off writer starts "
            "counting self_fence_after only "
            "once what it heard is that old, and a controller that died stays heard (and can "
            "stay the executor, so that nobody acts) for that long")
    # The writer's lease reaches only self_fence_after + self_fence_duration past the start
    # of the last healthy probe the others report (engine/lease.py): it must outlast the
    # wait for the next probe and the exchange that brings its result.
    lease = fleet.self_fence_after + fleet.self_fence_duration
    slowest = max(check.interval for check in liveness)
    if lease <= slowest + exchange:
        problems.append(
            f"{fleet_path}: self_fence_after: the writer's lease, self_fence_after + "
            f"self_fence_duration = {lease:g} s, must be longer than the slowest liveness "
            f"check's interval plus coordination.exchange_interval ({slowest:g} s + {exchange:g} "
            "s), or it runs out between two probes and the writer refuses writes every cycle")
    return problems


def _shared_values(regions: dict[str, Region], files: dict[str, Path], field: str,
                   consequence: str) -> list[str]:
    """A region's `field` that another region already has: each must have its own."""
    problems = []
    owner: dict[str, str] = {}
    for name, region in regions.items():
        value = str(getattr(region, field))
        first = owner.setdefault(value.lower(), name)
        if first != name:
            problems.append(f"{files[name]}: {field}: {value} is also the {field} of region "
                            f"{first!r} ({files[first]}); give each region its own, or "
                            f"{consequence}")
    return problems


def _shared_server_problems(fleet_path: Path, fleet: Fleet, regions: dict[str, Region]
                            ) -> list[str]:
    """Services whose databases share a PostgreSQL server (same host and port) while one of
    them is sync: `synchronous_standby_names` is server-wide, so an async neighbour's commits
    would wait for the sync service's subscribers, and two sync services cannot both be named
    (a subscriber of one acknowledges WAL positions of the other without holding its data)."""
    index = {service.name: i for i, service in enumerate(fleet.services)}
    durability = {service.name: service.durability for service in fleet.services}
    problems: list[str] = []
    reported: set[tuple[str, str]] = set()
    for region in regions.values():
        by_server: dict[tuple[str, int], list[str]] = {}
        for name, endpoint in region.postgres.items():
            if name in durability:
                by_server.setdefault((endpoint.host, endpoint.port), []).append(name)
        for (host, port), names in by_server.items():
            for first, second in combinations(sorted(names), 2):
                if (first, second) in reported or "sync" not in (durability[first],
                                                                 durability[second]):
                    continue
                reported.add((first, second))
                sync, other = (first, second) if durability[first] == "sync" else (second, first)
                where = f"{fleet_path}: services[{index[other]}].durability"
                server = f"the PostgreSQL server {host}:{port} (region {region.name})"
                if durability[other] == "sync":
                    problems.append(
                        f"{where}: services {first!r} and {second!r} both ask durability = "
                        f"\"sync\" and share {server}; synchronous_standby_names is server-wide "
                        "and cannot name the subscribers of both (a subscriber of one acknowledges "
                        "the other's commits without holding them): give each sync service a "
                        "server of its own")
                else:
                    problems.append(
                        f"{where}: service {other!r} asks durability = \"async\" and service "
                        f"{sync!r} durability = \"sync\", and they share {server}; "
                        f"synchronous_standby_names is server-wide, so {other}'s commits would "
                        f"wait for {sync}'s subscribers: give {sync!r} a server of its own, or "
                        "make both async")
    return problems


def _tls_problems(fleet_path: Path, fleet: Fleet, regions: dict[str, Region],
                  files: dict[str, Path]) -> list[str]:
    """TLS settings that name too little for what another part asks: a controller URL that
    says https:// needs a certificate to serve and a CA for its clients to verify it with; a
    writer that asks to be verified needs a CA on every server that subscribes to it."""
    problems: list[str] = []
    for name, region in regions.items():
        if region.serves_tls and region.api.cert_file is None:
            problems.append(f"{files[name]}: api.cert_file: controller_url {region.controller_url}"
                            " is https://, so this controller serves TLS: set api.cert_file and "
                            "api.key_file (its certificate must name the URL's host)")
        elif not region.serves_tls and region.api.cert_file is not None:
            problems.append(f"{files[name]}: api.cert_file: controller_url "
                            f"{region.controller_url} is http://, so the other controllers and "
                            "the CLI would speak plain HTTP to a TLS server: make it https:// or "
                            "remove api.cert_file and api.key_file")
    https = [name for name, region in regions.items() if region.serves_tls]
    if https and fleet.api.ca_file is None:
        problems.append(f"{fleet_path}: api.ca_file: the controller URLs of {', '.join(https)} "
                        "are https://: set ca_file to the CA certificates (PEM) that signed "
                        "their certificates, so that the controllers and the CLI can verify them")
    for service in fleet.services:
        members = [regions[n] for n in (service.regions or list(regions)) if n in regions]
        endpoints = {r.name: r.postgres[service.name] for r in members
                     if service.name in r.postgres}
        verified = sorted(n for n, e in endpoints.items() if e.sslmode in VERIFYING_SSLMODES)
        for name, endpoint in endpoints.items():
            writers = [w for w in verified if w != name]
            if writers and endpoint.subscription_sslrootcert is None:
                problems.append(
                    f"{files[name]}: postgres.{service.name}.subscription_sslrootcert: missing; "
                    f"this server subscribes to {', '.join(writers)} when it is the writer of "
                    f"{service.name!r}, whose sslmode verifies its certificate: name the CA "
                    "certificates (PEM) as a path on this region's PostgreSQL server host")
    return problems


def load_topology(path: Path, *, flag: str = "--topology") -> Topology:
    """Read and validate a topology folder; UserError lists every problem found."""
    path = Path(path)
    if not path.is_dir():
        hint = " (pass the folder, not the file)" if path.name == FLEET_FILE else ""
        raise UserError(f"{flag}: {path} is not a folder{hint}")
    fleet_path = path / FLEET_FILE
    if not fleet_path.exists():
        raise UserError(f"{fleet_path}: missing; a topology folder needs fleet.toml")
    problems: list[str] = []
    fleet: Fleet | None = None
    raw = _read_toml(fleet_path, problems)
    if raw is not None:
        try:
            fleet = Fleet.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_validation_problems(fleet_path, exc))

    regions: dict[str, Region] = {}
    files: dict[str, Path] = {}
    problems_before_regions = len(problems)
    for region_path in sorted(path.glob("*.toml")):
        if region_path.name == FLEET_FILE:
            continue
        raw = _read_toml(region_path, problems)
        if raw is None:
            continue
        try:
            region = Region.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_validation_problems(region_path, exc))
            continue
        if region.name in regions:
            problems.append(f"{region_path}: name: region {region.name!r} is already defined "
                            f"in {files[region.name]}; region names must be unique")
            continue
        endpoints = {svc: ep.model_copy(update={"source": f"{region_path}: postgres.{svc}"})
                     for svc, ep in region.postgres.items()}
        regions[region.name] = region.model_copy(update={"postgres": endpoints})
        files[region.name] = region_path

    if fleet is not None:
        all_loaded = len(problems) == problems_before_regions
        problems.extend(_cross_checks(fleet_path, fleet, regions, files,
                                      all_regions_loaded=all_loaded))
    if problems or fleet is None:
        raise UserError(f"{path}: the topology has {len(problems)} problem(s)", problems)
    return Topology(path=path, fleet=_anchor_files(fleet, path),
                    regions={name: _anchor_region(region, path) for name, region in regions.items()},
                    region_files=files, fingerprint=fingerprint(fleet_path, *files.values()))


def fingerprint(*paths: Path) -> str:
    """What the files say, as 16 hex digits: equal on two hosts only if every file (by
    name) has the same bytes there."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        content = path.read_bytes()
        digest.update(f"{path.name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:16]


def _anchored(file: Path | None, folder: Path) -> Path | None:
    """A relative path in a topology file means relative to the topology folder."""
    return None if file is None or file.is_absolute() else folder / file


def _anchor_fields(model: M, folder: Path, names: tuple[str, ...]) -> M:
    """`model` with its path fields `names` anchored in the topology folder."""
    updates = {name: anchored for name in names
               if (anchored := _anchored(getattr(model, name), folder)) is not None}
    return model.model_copy(update=updates) if updates else model


def _anchor_files(fleet: Fleet, folder: Path) -> Fleet:
    coordination = _anchor_fields(fleet.coordination, folder, ("key_file",))
    if coordination.etcd is not None:
        coordination = coordination.model_copy(
            update={"etcd": _anchor_fields(coordination.etcd, folder, TLS_FILE_FIELDS)})
    dns = fleet.dns
    if dns.rfc2136 is not None:
        dns = dns.model_copy(update={"rfc2136": _anchor_fields(dns.rfc2136, folder, ("key_file",))})
    return fleet.model_copy(update={"coordination": coordination, "dns": dns,
                                    "api": _anchor_fields(fleet.api, folder, ("ca_file",))})


def _anchor_region(region: Region, folder: Path) -> Region:
    endpoints = {service: _anchor_fields(endpoint, folder, ENDPOINT_FILE_FIELDS)
                 for service, endpoint in region.postgres.items()}
    checks = [_anchor_fields(check, folder, TLS_FILE_FIELDS) if isinstance(check, HttpCheck)
              else check for check in region.checks]
    return region.model_copy(update={"postgres": endpoints, "checks": checks,
                                     "api": _anchor_fields(region.api, folder, ("cert_file", "key_file"))})
