"""Ending a session whose server hangs, without waiting for the server.

psycopg answers a cancelled query by asking the server to cancel it and
waiting for that, which never ends when the server is stopped (SIGSTOP) or
its packets are dropped. Shutting the socket down makes everything waiting on
it fail at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

import psycopg


def hang_up(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> None:
    """Shut the session's socket down; shutdown() on a duplicate of the descriptor ends the
    connection for the original too, without closing the descriptor under psycopg's feet."""
    with contextlib.suppress(Exception):
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
