"""Everything said to a PostgreSQL server: schema, replication set-up, inspection,
fencing, promotion, switchover and rejoin, each action a list of named steps."""
