-- The failover schema, version 1. Installed into the service's database in
-- every region by `failover db install`; each version file runs once, inside
-- one transaction, and is recorded in failover.schema_version.
--
-- Local tables (never published): schema_version, node_state, publisher_memory.
-- Replicated tables (in the service's publication): heartbeat, sequence_snapshot.

CREATE SCHEMA IF NOT EXISTS failover;

-- What this region's copy of the service is. Local: each region has its own.
CREATE TABLE failover.node_state (
    service         text PRIMARY KEY,
    region          text NOT NULL,
    role            text NOT NULL DEFAULT 'unknown'
                    CHECK (role IN ('unknown', 'primary', 'subscriber')),
    -- The fencing token: the highest epoch any action on this node carried.
    epoch           bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    fenced          boolean NOT NULL DEFAULT false,
    -- Recorded by a promotion before it drops the subscription, because
    -- DROP SUBSCRIPTION removes the replication origin that held it: the
    -- position this node had applied from `handover_from`, under `handover_epoch`.
    handover_lsn    pg_lsn,
    handover_from   text,
    handover_epoch  bigint,
    writable_since  timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The primary rewrites its row every second (failover.beat). Replicated, so a
-- subscriber knows how old the newest data it applied is, even once the
-- publisher is dead. Switchover also writes its marker token here.
CREATE TABLE failover.heartbeat (
    service  text PRIMARY KEY,
    region   text NOT NULL,
    epoch    bigint NOT NULL,
    beat_at  timestamptz NOT NULL,
    token    uuid
);

-- The primary's sequence positions, refreshed with each beat. Replicated,
-- because logical replication does not carry sequences: a promoted subscriber
-- starts its sequences past both these values and its own max(column).
CREATE TABLE failover.sequence_snapshot (
    sequence_name  text PRIMARY KEY,
    last_value     bigint NOT NULL,
    taken_at       timestamptz NOT NULL
);

-- Last values seen in pg_stat_subscription for each subscription: they turn
-- NULL once the publisher is gone, exactly when a promotion needs them. Local.
CREATE TABLE failover.publisher_memory (
    subscription_oid  oid PRIMARY KEY,
    publisher_lsn     pg_lsn,
    last_contact      timestamptz,
    observed_at       timestamptz NOT NULL
);

-- Tables the service's publication carries: every ordinary or partitioned
-- table outside the system schemas, minus failover's local tables.
CREATE FUNCTION failover.publishable_tables() RETURNS SETOF regclass
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
                         'failover.schema_version'::regclass)
     ORDER BY n.nspname, c.relname
$$;

-- Sequences owned by a column (serial, bigserial, identity), with that column;
-- names are schema-qualified whatever the caller's search_path.
CREATE FUNCTION failover.owned_sequences()
RETURNS TABLE (sequence_name text, table_name regclass, column_name name)
LANGUAGE sql STABLE AS $$
    SELECT format('%I.%I', n.nspname, s.relname), d.refobjid::regclass, a.attname
      FROM pg_depend d
      JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
      JOIN pg_namespace n ON n.oid = s.relnamespace
      JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
     WHERE d.classid = 'pg_class'::regclass
       AND d.refclassid = 'pg_class'::regclass
       AND d.deptype IN ('a', 'i')
     ORDER BY 1
$$;

-- Refuse an action stamped with an epoch lower than the one recorded here.
CREATE FUNCTION failover.check_epoch(p_service text, p_epoch bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_recorded bigint;
BEGIN
    SELECT epoch INTO v_recorded FROM failover.node_state WHERE service = p_service;
    IF v_recorded IS NULL THEN
        RAISE EXCEPTION 'service % is not installed in this database', p_service
              USING ERRCODE = 'FO002', HINT = 'run failover db install';
    END IF;
    IF p_epoch < v_recorded THEN
        RAISE EXCEPTION 'stale epoch % for service %: this node already recorded epoch %',
              p_epoch, p_service, v_recorded
              USING ERRCODE = 'FO001';
    END IF;
    RETURN v_recorded;
END
$$;

-- One heartbeat: only a primary that is not fenced writes it. Returns whether it did.
CREATE FUNCTION failover.beat(p_service text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_state failover.node_state;
BEGIN
    SELECT * INTO v_state FROM failover.node_state WHERE service = p_service;
    IF NOT FOUND OR v_state.role <> 'primary' OR v_state.fenced THEN
        RETURN false;
    END IF;
    INSERT INTO failover.heartbeat AS h (service, region, epoch, beat_at, token)
    VALUES (p_service, v_state.region, v_state.epoch, clock_timestamp(), NULL)
    ON CONFLICT (service) DO UPDATE
       SET region = excluded.region, epoch = excluded.epoch, beat_at = excluded.beat_at;
    INSERT INTO failover.sequence_snapshot AS s (sequence_name, last_value, taken_at)
    SELECT o.sequence_name, q.last_value, clock_timestamp()
      FROM failover.owned_sequences() o
      JOIN pg_sequences q ON format('%I.%I', q.schemaname, q.sequencename)::regclass
                             = o.sequence_name::regclass
     WHERE q.last_value IS NOT NULL
    ON CONFLICT (sequence_name) DO UPDATE
       SET last_value = excluded.last_value, taken_at = excluded.taken_at
     WHERE s.last_value IS DISTINCT FROM excluded.last_value;
    RETURN true;
END
$$;

-- After an unplanned promotion: move every owned sequence past the highest
-- value it could have handed out, as far as this node knows (its column's
-- max, the replicated snapshot), plus `p_gap` for ids the dead primary handed
-- out that never arrived. Never moves a sequence backwards, so a rerun
-- changes nothing.
CREATE FUNCTION failover.sync_sequences(p_gap bigint)
RETURNS TABLE (sequence_name text, new_value bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_max bigint;
    v_snapshot bigint;
    v_current bigint;
    v_target bigint;
BEGIN
    FOR r IN SELECT * FROM failover.owned_sequences() LOOP
        EXECUTE format('SELECT max(%I)::bigint FROM %s', r.column_name, r.table_name) INTO v_max;
        SELECT s.last_value INTO v_snapshot
          FROM failover.sequence_snapshot s WHERE s.sequence_name = r.sequence_name;
        SELECT q.last_value INTO v_current
          FROM pg_sequences q
         WHERE format('%I.%I', q.schemaname, q.sequencename)::regclass = r.sequence_name::regclass;
        IF v_max IS NULL AND v_snapshot IS NULL THEN
            CONTINUE;  -- never used anywhere: its start value is right
        END IF;
        v_target := greatest(coalesce(v_max, 0), coalesce(v_snapshot, 0)) + p_gap;
        IF v_current IS NULL OR v_current < v_target THEN
            PERFORM setval(r.sequence_name::regclass, v_target, true);
            sequence_name := r.sequence_name;
            new_value := v_target;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- Everything a probe or a promotion needs to know about this node, in one
-- round trip. Also remembers the subscription's last publisher position and
-- contact time while they are known, and reads them back once they are NULL.
CREATE FUNCTION failover.node_status(p_service text, p_subscription name)
RETURNS TABLE (
    region text, role text, fenced boolean, epoch bigint, database_read_only boolean,
    subscription_present boolean, subscription_enabled boolean, worker_pid integer,
    publisher_conninfo text, remote_lsn pg_lsn, publisher_lsn pg_lsn, last_contact timestamptz,
    remembered boolean, heartbeat_region text, heartbeat_at timestamptz, heartbeat_token uuid,
    lag_bytes numeric, lag_seconds double precision,
    handover_lsn pg_lsn, handover_from text, handover_epoch bigint, server_time timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
    v_state failover.node_state;
    v_sub record;
    v_worker record;
    v_memory failover.publisher_memory;
    v_reference timestamptz;
BEGIN
    server_time := clock_timestamp();
    SELECT * INTO v_state FROM failover.node_state s WHERE s.service = p_service;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'service % is not installed in this database', p_service
              USING ERRCODE = 'FO002', HINT = 'run failover db install';
    END IF;
    region := v_state.region;
    role := v_state.role;
    fenced := v_state.fenced;
    epoch := v_state.epoch;
    handover_lsn := v_state.handover_lsn;
    handover_from := v_state.handover_from;
    handover_epoch := v_state.handover_epoch;
    database_read_only := EXISTS (
        SELECT 1 FROM pg_db_role_setting d
         WHERE d.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND d.setrole = 0
           AND 'default_transaction_read_only=on' = ANY (d.setconfig));

    SELECT h.region, h.beat_at, h.token INTO heartbeat_region, heartbeat_at, heartbeat_token
      FROM failover.heartbeat h WHERE h.service = p_service;

    SELECT s.oid, s.subenabled, s.subconninfo INTO v_sub
      FROM pg_subscription s
     WHERE s.subname = p_subscription
       AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database());
    subscription_present := FOUND;
    DELETE FROM failover.publisher_memory m
     WHERE m.subscription_oid NOT IN (SELECT oid FROM pg_subscription);
    IF NOT subscription_present THEN
        lag_bytes := CASE WHEN v_state.role = 'primary' THEN 0 END;
        lag_seconds := CASE WHEN v_state.role = 'primary' THEN 0 END;
        RETURN NEXT;
        RETURN;
    END IF;
    subscription_enabled := v_sub.subenabled;
    publisher_conninfo := v_sub.subconninfo;

    SELECT o.remote_lsn INTO remote_lsn
      FROM pg_replication_origin_status o WHERE o.external_id = 'pg_' || v_sub.oid;

    -- The apply worker (table-sync workers have a relid).
    SELECT w.pid, w.latest_end_lsn, w.last_msg_receipt_time INTO v_worker
      FROM pg_stat_subscription w
     WHERE w.subid = v_sub.oid AND w.relid IS NULL
     ORDER BY w.last_msg_receipt_time DESC NULLS LAST
     LIMIT 1;
    worker_pid := v_worker.pid;

    IF v_worker.latest_end_lsn IS NOT NULL THEN
        INSERT INTO failover.publisher_memory AS m
               (subscription_oid, publisher_lsn, last_contact, observed_at)
        VALUES (v_sub.oid, v_worker.latest_end_lsn, v_worker.last_msg_receipt_time, server_time)
        ON CONFLICT (subscription_oid) DO UPDATE
           SET publisher_lsn = excluded.publisher_lsn, last_contact = excluded.last_contact,
               observed_at = excluded.observed_at
         WHERE m.publisher_lsn IS DISTINCT FROM excluded.publisher_lsn
            OR m.last_contact IS DISTINCT FROM excluded.last_contact;
        publisher_lsn := v_worker.latest_end_lsn;
        last_contact := v_worker.last_msg_receipt_time;
        remembered := false;
    ELSE
        SELECT * INTO v_memory FROM failover.publisher_memory m
         WHERE m.subscription_oid = v_sub.oid;
        publisher_lsn := v_memory.publisher_lsn;
        last_contact := v_memory.last_contact;
        remembered := v_memory.subscription_oid IS NOT NULL;
    END IF;

    lag_bytes := greatest(0, publisher_lsn - remote_lsn);
    -- How old the newest applied heartbeat was when we last knew the
    -- publisher alive: now while streaming, or while the subscription is
    -- disabled (the publisher may be writing on); the last contact once the
    -- worker is gone with the subscription still enabled (publisher dead).
    v_reference := CASE
        WHEN worker_pid IS NOT NULL OR NOT subscription_enabled THEN server_time
        ELSE last_contact
    END;
    lag_seconds := greatest(0, extract(epoch FROM v_reference - heartbeat_at));
    RETURN NEXT;
END
$$;
