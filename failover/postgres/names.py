"""Names of the replication objects a service owns, the same on every side.

The controller finds a service's publication, subscriptions and slots by these
names alone, so they must be derived, never configured.
"""

from __future__ import annotations

import re


def _ident(text: str) -> str:
    # Service and region names allow '-', which is not valid unquoted, and slot
    # names accept only [a-z0-9_].
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


def publication_name(service: str) -> str:
    return f"failover_{_ident(service)}"


def subscription_name(service: str) -> str:
    return f"failover_{_ident(service)}"


def slot_name(service: str, subscriber_region: str) -> str:
    """The slot on the primary that feeds `subscriber_region`."""
    return f"failover_{_ident(service)}_{_ident(subscriber_region)}"


def standby_name(service: str, subscriber_region: str) -> str:
    """The application_name of `subscriber_region`'s subscription: the name its walsender on
    the writer reports (pg_stat_replication), and the name synchronous_standby_names lists.
    Every region's subscription is called `subscription_name(service)`, which PostgreSQL
    would report otherwise, so the writer could not tell its subscribers apart."""
    return f"failover_{_ident(service)}_{_ident(subscriber_region)}"


def slot_prefix(service: str) -> str:
    return f"failover_{_ident(service)}_"
