"""Multi-region failover controller for PostgreSQL logical-replication services."""

__version__ = "0.1.0"
