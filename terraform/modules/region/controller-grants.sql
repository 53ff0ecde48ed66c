-- What the failover controller's role (controller-role.sql) gets in one service database
-- once `failover db install` has run there as the local superuser, which then owns the
-- failover schema (the lease guard's event trigger needs a superuser). Run at boot, and
-- again after every install (an upgrade may add tables), by failover-region-setup:
--   psql -v ON_ERROR_STOP=1 -v role=failover -d DATABASE -f controller-grants.sql
--
-- The database itself belongs to the role (CREATE DATABASE ... OWNER): CREATE on it for
-- the service's publication and subscription, and ALTER DATABASE ... SET
-- default_transaction_read_only, which fences and promotions turn on and off.
--
-- The service's own tables must belong to the role too, or to a role it is a member of
-- (GRANT app_owner TO failover), for the two reasons given below, and because a promotion
-- moves their sequences past the old primary's (setval).

GRANT USAGE ON SCHEMA failover TO :"role";
-- Its bookkeeping: the node's record, the lease, the publisher positions it remembers.
-- Failover's functions run with their caller's rights, so it needs the tables too (the
-- lease guard's own three functions are among these: two run only as triggers, and
-- attach_guards only ever adds guards).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA failover TO :"role";
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA failover TO :"role";
-- Probes and promotions read which publisher a subscription follows, and how far it has
-- applied; both are kept from other roles by default (a connection string may hold a
-- password, here this role's own).
GRANT SELECT (subconninfo) ON pg_catalog.pg_subscription TO :"role";
GRANT SELECT ON pg_catalog.pg_replication_origin_status TO :"role";
GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO :"role";
-- The replicated tables (heartbeat, sequence snapshot) become the role's own: a
-- publication may list only tables its owner owns, and since PostgreSQL 16 the apply
-- worker writes as each table's owner, whom the subscription's owner must be able to
-- become.
SELECT format('ALTER TABLE %s OWNER TO %I', t, :'role')
  FROM failover.publishable_tables() AS t
  JOIN pg_class c ON c.oid = t
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'failover' \gexec
