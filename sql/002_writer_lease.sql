-- The failover schema, version 2: the writer's lease, enforced by the server itself.
--
-- Version 1 fenced with default_transaction_read_only, which any session can
-- turn off, and a primary restarted by its supervisor took writes again. Now
-- every table the service replicates carries a statement-level trigger that
-- refuses INSERT, UPDATE, DELETE and TRUNCATE unless this server holds a lease
-- naming it the writer at its recorded epoch, valid by its own clock, and
-- granted since the postmaster started. The controller renews the lease every
-- tick while it is the recorded writer with a quorum; fencing ends it.
--
-- Who is not bound: sessions with session_replication_role = replica, where
-- ordinary triggers do not fire. Logical replication's apply and table-sync
-- workers run so (replication keeps flowing into a subscriber), and so does the
-- controller for the few writes it makes to application tables (emptying a
-- subscriber before a full copy). Setting it takes a superuser, or on 15+
-- `GRANT SET ON PARAMETER session_replication_role`, which an application
-- role must never hold.
--
-- Creating the event trigger below takes a superuser: run `failover db install`
-- as one.
--
-- Local tables added: lease. Nothing here is published.

-- One service per database: its publication carries every table of the
-- database (publishable_tables), and the guard reads the one service's lease.
DO $$
BEGIN
    IF (SELECT count(*) FROM failover.node_state) > 1 THEN
        RAISE EXCEPTION 'this database holds services %, but a database holds one service: its '
                        'publication carries all of its tables',
              (SELECT string_agg(service, ', ' ORDER BY service) FROM failover.node_state);
    END IF;
END
$$;
CREATE UNIQUE INDEX node_state_one_service ON failover.node_state ((true));

-- Who took the recorded epoch, so that a promotion rerun after a crash is told
-- apart from a second promotion at the same epoch. claimed_epoch says which
-- epoch claimed_by refers to: once a fence raises `epoch`, the claim is stale.
ALTER TABLE failover.node_state
    ADD COLUMN claimed_epoch bigint,
    ADD COLUMN claimed_by    text;

-- This server's write lease. Local: each server holds its own, granted by the
-- controller of its region; never replicated, or a subscriber would inherit
-- the primary's.
CREATE TABLE failover.lease (
    service      text PRIMARY KEY REFERENCES failover.node_state (service) ON DELETE CASCADE,
    region       text NOT NULL,
    epoch        bigint NOT NULL,
    granted_at   timestamptz NOT NULL,
    valid_until  timestamptz NOT NULL
);

CREATE TYPE failover.lease_status AS (
    service       text,
    region        text,
    epoch         bigint,
    writer        boolean,
    refused       text,
    granted_at    timestamptz,
    valid_until   timestamptz,
    seconds_left  double precision,
    server_time   timestamptz
);

CREATE OR REPLACE FUNCTION failover.publishable_tables() RETURNS SETOF regclass
LANGUAGE sql STABLE AS $$
    SELECT c.oid::regclass
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND NOT c.relispartition
       AND c.relpersistence = 'p'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg\_%'
       AND c.oid NOT IN ('failover.node_state'::regclass, 'failover.publisher_memory'::regclass,
                         'failover.schema_version'::regclass, 'failover.lease'::regclass)
     ORDER BY n.nspname, c.relname
$$;

-- The tables the lease guards: what the service publishes, with every
-- partition (the publication reaches them through their parent, but a client
-- can write a partition directly, and a parent's statement trigger does not
-- fire then). Not failover's own replicated tables: the application role has
-- no access to schema failover, and the controller writes them exactly when
-- this server holds no lease (the switchover marker on the fenced old primary,
-- the first heartbeat of a promotion, emptying them before a first copy);
-- failover.beat writes only on an unfenced primary.
CREATE FUNCTION failover.guarded_tables() RETURNS SETOF regclass
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT coalesce(tree.relid, t)
      FROM failover.publishable_tables() t
      LEFT JOIN LATERAL pg_partition_tree(t) tree ON true  -- no rows for a plain table
      JOIN pg_class c ON c.oid = coalesce(tree.relid, t)
     WHERE c.relkind IN ('r', 'p')
       AND c.oid NOT IN ('failover.heartbeat'::regclass, 'failover.sequence_snapshot'::regclass)
$$;

-- Why this server refuses application writes now; NULL when it is the writer.
-- A body parsed once (not a string) binds its names at creation, so that the
-- SECURITY DEFINER guard cannot be steered by a caller's search_path.
CREATE FUNCTION failover.lease_refusal(s failover.node_state, l failover.lease) RETURNS text
LANGUAGE sql VOLATILE
RETURN CASE
    WHEN s.role <> 'primary' THEN format('not the recorded writer (role %s)', s.role)
    WHEN s.fenced THEN format('fenced at epoch %s', s.epoch)
    WHEN l.service IS NULL THEN 'not the recorded writer (no lease was granted)'
    WHEN l.region <> s.region OR l.epoch <> s.epoch
        THEN format('not the recorded writer (the lease names %s at epoch %s, this server records '
                    '%s at epoch %s)', l.region, l.epoch, s.region, s.epoch)
    -- A supervisor may restart a fenced or partitioned primary at once: it must
    -- come back fenced, however little of the lease was left.
    WHEN l.granted_at <= pg_postmaster_start_time()
        THEN format('server restarted since the lease was granted (at %s)', l.granted_at)
    WHEN clock_timestamp() >= l.valid_until THEN format('lease expired at %s', l.valid_until)
END;

CREATE FUNCTION failover.lease_state(p_service text) RETURNS failover.lease_status
LANGUAGE plpgsql AS $$
DECLARE
    v failover.lease_status;
BEGIN
    SELECT s.service, s.region, s.epoch, r.refused IS NULL, r.refused, l.granted_at,
           l.valid_until,
           CASE WHEN r.refused IS NULL
                THEN greatest(0, extract(epoch FROM l.valid_until - r.now)) ELSE 0 END,
           r.now
      INTO v
      FROM failover.node_state s
      LEFT JOIN failover.lease l ON l.service = s.service
     CROSS JOIN LATERAL (SELECT failover.lease_refusal(s, l) AS refused,
                                clock_timestamp() AS now) r
     WHERE s.service = p_service;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'service % is not installed in this database', p_service
              USING ERRCODE = 'FO002', HINT = 'run failover db install';
    END IF;
    RETURN v;
END
$$;

-- The node's record, locked for the caller's transaction; refuses an epoch
-- lower than the recorded one (NULL: act at the recorded epoch).
CREATE FUNCTION failover.epoch_gate(p_service text, p_epoch bigint) RETURNS failover.node_state
LANGUAGE plpgsql AS $$
DECLARE
    v_state failover.node_state;
BEGIN
    SELECT * INTO v_state FROM failover.node_state WHERE service = p_service FOR UPDATE;
    PERFORM failover.check_epoch(p_service, p_epoch);  -- FO002 if missing, FO001 if stale
    RETURN v_state;
END
$$;

-- May `p_claimant` become the writer at `p_epoch` here? Above the recorded
-- epoch, yes; at it, only the claimant that took it (a rerun after a crash).
-- An epoch is claimed once: two promotions that picked the same epoch cannot
-- both make this node the writer. Returns the recorded epoch.
CREATE FUNCTION failover.check_claim(p_service text, p_epoch bigint, p_claimant text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_state failover.node_state := failover.epoch_gate(p_service, p_epoch);
BEGIN
    IF p_epoch = v_state.epoch AND (v_state.claimed_epoch IS DISTINCT FROM p_epoch
                                    OR v_state.claimed_by IS DISTINCT FROM p_claimant) THEN
        RAISE EXCEPTION 'epoch % of service % is already taken on this node (%): % cannot claim it',
              p_epoch, p_service,
              CASE WHEN v_state.claimed_epoch = p_epoch
                   THEN format('claimed by %s', v_state.claimed_by)
                   ELSE 'recorded by a fence or a re-point' END,
              p_claimant
              USING ERRCODE = 'FO004', HINT = 'plan again with a higher epoch';
    END IF;
    RETURN v_state.epoch;
END
$$;

-- Grant or extend the lease, only to an unfenced primary for its own region at
-- its recorded epoch; valid for `p_ttl_seconds` by this server's clock.
-- Refused with FO001 below the recorded epoch and FO004 for another region or
-- an epoch not recorded yet; a subscriber or a fenced primary gets no lease and
-- the returned state says why.
CREATE FUNCTION failover.renew_lease(p_service text, p_region text, p_epoch bigint,
                                     p_ttl_seconds double precision)
RETURNS failover.lease_status
LANGUAGE plpgsql AS $$
DECLARE
    v_state failover.node_state := failover.epoch_gate(p_service, p_epoch);
BEGIN
    IF p_ttl_seconds IS NULL OR p_ttl_seconds <= 0 THEN
        RAISE EXCEPTION 'a lease needs a positive ttl, not %', p_ttl_seconds
              USING ERRCODE = '22023';
    END IF;
    IF v_state.region <> p_region THEN
        RAISE EXCEPTION 'this database holds region %''s copy of service %, not %''s',
              v_state.region, p_service, p_region
              USING ERRCODE = 'FO004';
    END IF;
    IF p_epoch IS DISTINCT FROM v_state.epoch THEN  -- lower was refused above
        RAISE EXCEPTION 'epoch % of service % is not recorded on this node (it records %): '
                        'only a promotion raises it', p_epoch, p_service, v_state.epoch
              USING ERRCODE = 'FO004';
    END IF;
    IF v_state.role = 'primary' AND NOT v_state.fenced THEN
        INSERT INTO failover.lease AS l (service, region, epoch, granted_at, valid_until)
        VALUES (p_service, p_region, p_epoch, clock_timestamp(),
                clock_timestamp() + make_interval(secs => p_ttl_seconds))
        ON CONFLICT (service) DO UPDATE
           SET region = excluded.region, epoch = excluded.epoch,
               granted_at = excluded.granted_at, valid_until = excluded.valid_until;
    END IF;
    RETURN failover.lease_state(p_service);
END
$$;

-- The fence: the lease ends now, the node records the fence, and its epoch
-- rises to `p_epoch` (NULL: stays), so that a stale unfence or renewal below
-- it is refused.
CREATE FUNCTION failover.revoke_lease(p_service text, p_epoch bigint)
RETURNS failover.lease_status
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM failover.epoch_gate(p_service, p_epoch);
    UPDATE failover.lease SET valid_until = least(valid_until, clock_timestamp())
     WHERE service = p_service;
    UPDATE failover.node_state
       SET fenced = true, epoch = greatest(epoch, coalesce(p_epoch, epoch)),
           updated_at = clock_timestamp()
     WHERE service = p_service;
    RETURN failover.lease_state(p_service);
END
$$;

-- Undo a fence, only at the recorded epoch; a primary gets a fresh lease.
CREATE FUNCTION failover.lift_fence(p_service text, p_epoch bigint,
                                    p_ttl_seconds double precision)
RETURNS failover.lease_status
LANGUAGE plpgsql AS $$
DECLARE
    v_state failover.node_state := failover.epoch_gate(p_service, p_epoch);
BEGIN
    IF p_epoch IS DISTINCT FROM v_state.epoch THEN
        RAISE EXCEPTION 'unfence at epoch % refused: service % records epoch % on this node',
              p_epoch, p_service, v_state.epoch
              USING ERRCODE = 'FO004';
    END IF;
    UPDATE failover.node_state SET fenced = false, updated_at = clock_timestamp()
     WHERE service = p_service;
    IF v_state.role = 'primary' THEN
        RETURN failover.renew_lease(p_service, v_state.region, p_epoch, p_ttl_seconds);
    END IF;
    RETURN failover.lease_state(p_service);
END
$$;

-- The guard. SECURITY DEFINER: the application role has no access to schema
-- failover, and must not need any.
CREATE FUNCTION failover.guard_writes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_service text;
    v_region text;
    v_epoch bigint;
    v_refused text;
BEGIN
    -- One row at most (node_state_one_service). Kept to one plain join: every
    -- write pays for this query, and a sort or a second query would double it.
    SELECT s.service, s.region, s.epoch, failover.lease_refusal(s, l)
      INTO v_service, v_region, v_epoch, v_refused
      FROM failover.node_state s
      LEFT JOIN failover.lease l ON l.service = s.service;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'writes refused in database %: no failover service is registered here',
              current_database()
              USING ERRCODE = 'FO003';
    END IF;
    IF v_refused IS NOT NULL THEN
        RAISE EXCEPTION 'writes to service % refused on region %: %', v_service, v_region, v_refused
              USING ERRCODE = 'FO003',
                    DETAIL = format('%s on %I.%I; this server records epoch %s', TG_OP,
                                    TG_TABLE_SCHEMA, TG_TABLE_NAME, v_epoch),
                    HINT = 'only the recorded writer, holding a lease from its failover '
                           'controller, takes writes: connect through the service''s writer address';
    END IF;
    RETURN NULL;
END
$$;

-- Put the guard on every guarded table that lacks it; refuse a guard that was
-- disabled (or set to fire only in replica mode, or always: that would stop
-- the apply worker). A dropped guard comes back. Returns how many it added.
CREATE FUNCTION failover.attach_guards() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    v_added integer := 0;
BEGIN
    FOR r IN
        SELECT g.t AS tbl, tr.tgenabled
          FROM failover.guarded_tables() g(t)
          LEFT JOIN pg_trigger tr
            ON tr.tgrelid = g.t AND tr.tgfoid = 'failover.guard_writes()'::regprocedure
    LOOP
        IF r.tgenabled IS NULL THEN
            EXECUTE format('CREATE TRIGGER failover_lease_guard BEFORE INSERT OR UPDATE OR DELETE '
                           'OR TRUNCATE ON %s FOR EACH STATEMENT '
                           'EXECUTE FUNCTION failover.guard_writes()', r.tbl);
            v_added := v_added + 1;
        ELSIF r.tgenabled <> 'O' THEN
            RAISE EXCEPTION 'the failover lease guard on % must stay enabled as it was: it is '
                            'the fence that keeps a stale primary from taking writes', r.tbl
                  USING ERRCODE = '42501';
        END IF;
    END LOOP;
    RETURN v_added;
END
$$;

CREATE FUNCTION failover.guard_new_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_commands bigint;
    v_guards bigint;
BEGIN
    -- attach_guards' own CREATE TRIGGERs fire this again: looking again from
    -- inside its loop would attach twice. (A DROP TRIGGER reports no command
    -- here, so it is looked at.)
    SELECT count(*), count(*) FILTER (WHERE c.command_tag = 'CREATE TRIGGER' AND EXISTS (
               SELECT 1 FROM pg_trigger t
                WHERE t.oid = c.objid AND t.tgfoid = 'failover.guard_writes()'::regprocedure))
      INTO v_commands, v_guards
      FROM pg_event_trigger_ddl_commands() c;
    IF v_commands > 0 AND v_commands = v_guards THEN
        RETURN;
    END IF;
    PERFORM failover.attach_guards();
END
$$;

-- Not only after CREATE TABLE: a table also becomes one to guard by ALTER TABLE
-- (ATTACH/DETACH PARTITION, SET LOGGED), inside CREATE SCHEMA or an extension,
-- and a guard can be dropped, replaced or disabled by DROP/CREATE TRIGGER and
-- ALTER TABLE. Not after the rest (subscriptions, publications during a
-- promotion): every run looks at every table.
CREATE EVENT TRIGGER failover_lease_guard ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE',
                 'CREATE TRIGGER', 'ALTER TRIGGER', 'DROP TRIGGER', 'CREATE SCHEMA',
                 'CREATE EXTENSION', 'ALTER EXTENSION')
    EXECUTE FUNCTION failover.guard_new_tables();

REVOKE EXECUTE ON FUNCTION failover.guard_writes(), failover.attach_guards(),
    failover.guard_new_tables() FROM PUBLIC;

SELECT failover.attach_guards();
