"""Everything said to a PostgreSQL server: schema, replication set-up, inspection, the
writer's lease, fencing, promotion, switchover and rejoin, each action a list of named
steps."""
