-- The failover controller's role, made or brought up to date by the local superuser at
-- boot (failover-region-setup):
--   FAILOVER_ROLE_PASSWORD=... psql -v ON_ERROR_STOP=1 -v role=failover -f controller-role.sql
-- It may do what `failover controller run`, `failover db replicate` and the operator verbs
-- do to a server, and since PostgreSQL 16 nothing else: no SUPERUSER, no CREATEROLE, no
-- CREATEDB. What it needs inside each service database is in controller-grants.sql.
\getenv password FAILOVER_ROLE_PASSWORD

SELECT format('CREATE ROLE %I', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec

SELECT current_setting('server_version_num')::int >= 160000 AS since_16 \gset
\if :since_16
-- REPLICATION: create, copy, peek at and drop logical slots (promotions; rejoins, which
-- list an old primary's lost transactions), and the login of every subscription, which
-- connects to its publisher as this role.
ALTER ROLE :"role" LOGIN NOSUPERUSER REPLICATION PASSWORD :'password';
-- CREATE SUBSCRIPTION (`db replicate`; promotions re-point the other subscribers; rejoins
-- subscribe an old primary): since 16, a member of pg_create_subscription with CREATE on
-- the database, which this role owns; ALTER and DROP SUBSCRIPTION: the subscription's
-- owner, which is this role. A subscription owned by a non-superuser must log in with a
-- password, as pg_hba.conf demands anyway.
GRANT pg_create_subscription TO :"role";
-- Fencing and promotions end the application's sessions, which are other roles': they
-- find them in pg_stat_activity, which tells other roles' sessions apart (their
-- backend_type) to members of pg_read_all_stats only, and signal them as a member of
-- pg_signal_backend. (Reading every session's statistics and query is nothing new to a
-- role that owns the service's tables.)
GRANT pg_read_all_stats, pg_signal_backend TO :"role";
-- A full re-copy (a lagging subscriber re-pointed, a rejoin) first empties the tables as
-- a replica session, which the write-lease guard lets through as it lets the apply
-- workers' writes.
GRANT SET ON PARAMETER session_replication_role TO :"role";
\else
-- PostgreSQL 15: only a superuser may CREATE SUBSCRIPTION, which `db replicate`,
-- promotions and rejoins do, so the controller's role must be one there. Use 16 or later
-- for a controller without superuser rights.
ALTER ROLE :"role" LOGIN SUPERUSER REPLICATION PASSWORD :'password';
\endif
