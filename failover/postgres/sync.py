"""A server's synchronous_standby_names: parsed, written, and set as an epoch-checked step.

The setting is server-wide (ALTER SYSTEM + reload; superuser, or on 15+ a role granted
ALTER SYSTEM on the parameter and EXECUTE on pg_reload_conf). Failover writes only
`ANY k ("name", ...)`, the names being its subscriptions' application_names
(`names.standby_name`), or '' for commits that wait for no standby.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from psycopg import sql

from failover.engine.model import NO_STANDBYS, SyncStandbys
from failover.postgres.connection import Connection, ServiceDatabases
from failover.postgres.names import standby_name
from failover.postgres.state import check_epoch
from failover.postgres.steps import SqlStep
from failover.postgres.waiting import wait_for

# The tokens of PostgreSQL's syncrep grammar: a double-quoted name ("" escapes a quote), an
# identifier, a number, '*' (any standby), and punctuation.
_TOKEN = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([A-Za-z\x80-\U0010ffff_][A-Za-z\x80-\U0010ffff_0-9$]*)'
                    r"|(\d+)|(\*)|([,()]))")
_SHOW = "SELECT current_setting('synchronous_standby_names')"


def format_standby_names(standbys: SyncStandbys) -> str:
    """The setting's text: '' for no standby, else `ANY k ("a", "b")` (or FIRST)."""
    if not standbys.waits:
        return ""
    names = ", ".join('"' + name.replace('"', '""') + '"' for name in standbys.names)
    return f"{'ANY' if standbys.quorum else 'FIRST'} {standbys.count} ({names})"


def _tokens(text: str) -> list[tuple[str, str]] | None:
    found: list[tuple[str, str]] = []
    position = 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        if match is None:
            return None
        quoted, ident, number, star, punct = match.groups()
        if quoted is not None:
            found.append(("name", quoted.replace('""', '"')))
        elif ident is not None:
            keyword = ident.upper()
            found.append(("keyword", keyword) if keyword in ("ANY", "FIRST") else ("name", ident))
        elif number is not None:
            found.append(("number", number))
        elif star is not None:
            found.append(("name", star))
        else:
            found.append((punct, punct))
        position = match.end()
    return found


def parse_standby_names(text: str | None) -> SyncStandbys | None:
    """What the setting means (None: absent or not valid). Names compare case-insensitively
    with application names, so they are kept lower-case; ANY's are sorted (order is moot)."""
    if text is None:
        return None
    tokens = _tokens(text)
    if tokens is None:
        return None
    if not tokens:
        return NO_STANDBYS
    # `ANY k (list)`, `FIRST k (list)` and `k (list)` have parentheses; a bare list means FIRST 1.
    quorum, count, parenthesised = False, 1, True
    if tokens[0][0] == "keyword":
        if len(tokens) < 2 or tokens[1][0] != "number":
            return None
        quorum, count, tokens = tokens[0][1] == "ANY", int(tokens[1][1]), tokens[2:]
    elif tokens[0][0] == "number" and len(tokens) > 1 and tokens[1][0] == "(":
        count, tokens = int(tokens[0][1]), tokens[1:]
    else:
        parenthesised = False
    if parenthesised:
        if len(tokens) < 2 or tokens[0][0] != "(" or tokens[-1][0] != ")":
            return None
        tokens = tokens[1:-1]
    names, separators = tokens[0::2], tokens[1::2]
    if (count < 1 or not names or any(kind not in ("name", "number") for kind, _ in names)
            or any(kind != "," for kind, _ in separators) or len(tokens) % 2 == 0):
        return None
    lowered = tuple(value.lower() for _, value in names)
    return SyncStandbys(tuple(sorted(lowered)) if quorum else lowered, count, quorum)


def read_sync_standbys(conn: Connection) -> SyncStandbys | None:
    row = conn.execute(_SHOW).fetchone()
    return parse_standby_names(None if row is None else str(row[0]))


def _apply(conn: Connection, standbys: SyncStandbys, *, timeout: float) -> None:
    """ALTER SYSTEM and reload, then wait until this session sees it: a backend applies a
    reload between commands, once the postmaster has read the file."""
    conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(
        sql.Literal(format_standby_names(standbys))))
    conn.execute("SELECT pg_reload_conf()")
    wait_for(lambda: read_sync_standbys(conn) == standbys, timeout=timeout,
             what=f"the server to reload synchronous_standby_names = "
                  f"'{format_standby_names(standbys)}'")


def set_sync_standbys(conn: Connection, service: str, epoch: int, standbys: SyncStandbys, *,
                      region: str, timeout: float) -> str:
    """Make the server's commits wait for `standbys`, unless a plan with a higher epoch
    acted on it (SafetyRefusal). Changes nothing when it already does."""
    check_epoch(conn, service, epoch, region=region)
    current = read_sync_standbys(conn)
    if current == standbys:
        return f"already waits for {standbys.describe()}"
    _apply(conn, standbys, timeout=timeout)
    was = "an unparsed setting" if current is None else current.describe()
    return f"commits wait for {standbys.describe()} (was {was})"


def sync_standbys_step(db: ServiceDatabases, region: str, epoch: int,
                       standbys: SyncStandbys) -> SqlStep:
    service = db.service.name

    def run() -> str:
        return set_sync_standbys(db.conn(region), service, epoch, standbys, region=region,
                                 timeout=db.statement_timeout)

    return SqlStep(f"make commits on {region} wait for {standbys.describe()}", region, (
        f"SELECT failover.check_epoch('{service}', {epoch})",
        sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(
            sql.Literal(format_standby_names(standbys))).as_string(),
        "SELECT pg_reload_conf()  -- then wait until the setting shows",
    ), run)


CLEAR_SERVICE_STANDBYS_SQL = ("ALTER SYSTEM SET synchronous_standby_names = ''; "
                              "SELECT pg_reload_conf()  -- if it names the service's standbys")


def clear_service_standbys(conn: Connection, service: str, regions: Iterable[str], *,
                           timeout: float) -> str:
    """A server that becomes a subscriber stops waiting for the service's standbys it named
    as the writer: its apply worker commits with synchronous_commit = on, and would wait
    for standbys that never connect to it. A setting made by hand is left alone."""
    current = read_sync_standbys(conn)
    ours = {standby_name(service, region) for region in regions}
    if current is None or not current.waits or not set(current.names) <= ours:
        return "no synchronous standby of the service to clear"
    _apply(conn, NO_STANDBYS, timeout=timeout)
    return f"stopped waiting for {current.describe()}"
