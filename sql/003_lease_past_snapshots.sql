-- The failover schema, version 3: the lease's end is read as it is now, whatever the
-- transaction's snapshot, and every write transaction checks the lease again at commit.
--
-- Version 2 read the lease row like any other row, which left two gaps:
-- * A REPEATABLE READ or SERIALIZABLE transaction sees rows as of its first
--   statement. A long one was refused on a healthy writer once the lease it first
--   saw had ended, however often the controller had renewed it since.
-- * The guard runs when a statement starts. A transaction that wrote while the lease
--   was valid could commit after the lease ended (a fence, or another region
--   promoted), for as long as its session stayed open and was not terminated: two
--   writers' commits at once.
-- Sequences are not versioned: every session reads a sequence's current value. The
-- lease's end is copied into one whenever the lease row changes, and the guard
-- reads the end from there. Whether this server is the writer (role, fence,
-- epoch, restart) is still read from the rows: a transaction cannot outlive a
-- restart, and every fence also ends the lease.
--
-- The copy is made at once, not at commit. A renewal that rolls back after
-- extending it leaves the extension, which its controller had already bounded by
-- what the quorum vouched for; a fence that rolls back leaves the lease ended,
-- which is the safe side.
--
-- Local objects added: lease_end_us, commit_check. Nothing here is published.

-- Microseconds since 1970 of the lease's end; 0: no lease.
CREATE SEQUENCE failover.lease_end_us AS bigint MINVALUE 0 START 0;

-- Not secret, and only roles that may use schema failover reach it: the controller's
-- role reads the lease (lease_state) with no grant of its own. (A SECURITY DEFINER
-- reader would cost every write a second switch of user and search_path.)
GRANT SELECT ON failover.lease_end_us TO PUBLIC;

CREATE FUNCTION failover.lease_end() RETURNS timestamptz
LANGUAGE sql VOLATILE
RETURN to_timestamp(coalesce(pg_sequence_last_value('failover.lease_end_us'), 0) / 1e6);

CREATE FUNCTION failover.copy_lease_end() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM setval('failover.lease_end_us',
                   CASE WHEN TG_OP = 'DELETE' THEN 0
                        ELSE greatest(0, floor(extract(epoch FROM NEW.valid_until) * 1e6))::bigint
                   END);
    RETURN NULL;
END
$$;

CREATE TRIGGER failover_lease_end AFTER INSERT OR UPDATE OR DELETE ON failover.lease
    FOR EACH ROW EXECUTE FUNCTION failover.copy_lease_end();
-- Also in a session with session_replication_role = replica (the controller's own
-- writes to application tables run so).
ALTER TABLE failover.lease ENABLE ALWAYS TRIGGER failover_lease_end;

SELECT setval('failover.lease_end_us',
              coalesce((SELECT greatest(0, floor(extract(epoch FROM valid_until) * 1e6))::bigint
                          FROM failover.lease), 0));

-- Version 2's rule, with the lease's end taken from the sequence.
CREATE OR REPLACE FUNCTION failover.lease_refusal(s failover.node_state, l failover.lease)
RETURNS text
LANGUAGE sql VOLATILE
RETURN CASE
    WHEN s.role <> 'primary' THEN format('not the recorded writer (role %s)', s.role)
    WHEN s.fenced THEN format('fenced at epoch %s', s.epoch)
    WHEN l.service IS NULL THEN 'not the recorded writer (no lease was granted)'
    WHEN l.region <> s.region OR l.epoch <> s.epoch
        THEN format('not the recorded writer (the lease names %s at epoch %s, this server records '
                    '%s at epoch %s)', l.region, l.epoch, s.region, s.epoch)
    WHEN l.granted_at <= pg_postmaster_start_time()
        THEN format('server restarted since the lease was granted (at %s)', l.granted_at)
    WHEN clock_timestamp() >= failover.lease_end()
        THEN format('lease expired at %s', failover.lease_end())
END;

-- One row per write transaction, queued by the guard on the transaction's first
-- write; its deferred trigger checks the lease as the transaction commits.
CREATE UNLOGGED TABLE failover.commit_check (xid xid8 PRIMARY KEY);

CREATE FUNCTION failover.guard_commit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_service text;
    v_region text;
    v_refused text;
BEGIN
    DELETE FROM failover.commit_check WHERE xid = NEW.xid;
    SELECT s.service, s.region, failover.lease_refusal(s, l)
      INTO v_service, v_region, v_refused
      FROM failover.node_state s
      LEFT JOIN failover.lease l ON l.service = s.service;
    IF v_refused IS NOT NULL THEN
        RAISE EXCEPTION 'commit refused: writes to service % ended on region % before this '
                        'transaction committed: %', v_service, v_region, v_refused
              USING ERRCODE = 'FO003',
                    DETAIL = 'its writes passed the lease guard while the lease was valid; '
                             'nothing of the transaction was committed',
                    HINT = 'another region may be the writer now: connect through the '
                           'service''s writer address and retry the transaction';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER failover_commit_guard AFTER INSERT ON failover.commit_check
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION failover.guard_commit();

-- Version 2's guard, which now also queues the check at commit.
CREATE OR REPLACE FUNCTION failover.guard_writes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_service text;
    v_region text;
    v_epoch bigint;
    v_refused text;
BEGIN
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
    PERFORM FROM failover.commit_check WHERE xid = pg_current_xact_id();
    IF NOT FOUND THEN
        INSERT INTO failover.commit_check VALUES (pg_current_xact_id());
    END IF;
    RETURN NULL;
END
$$;

REVOKE EXECUTE ON FUNCTION failover.copy_lease_end(), failover.guard_commit() FROM PUBLIC;
