-- iot-sensors-bridge database schema.
-- Idempotent: safe to run again on an existing database (psql -f schema.sql).
-- Run it as the database owner. It creates the tables and three NOLOGIN group
-- roles holding exactly the privileges each component needs; grant them to
-- the login roles you create (deploy/postgres/roles.sql does it for Docker):
--     iot_bridge   bridge workers: insert readings and dead letters
--     iot_bridge_update  bridge workers with BRIDGE_ON_CONFLICT=update: also
--                  replace a reading by a higher revision, appending the
--                  replaced version to reading_revisions
--     iot_replay   python -m bridge replay-rejected: read dead letters,
--                  insert readings, append replay records
--     iot_watchdog the watchdog: connect, run a trivial query, read
--                  pg_stat_replication (pg_read_all_stats, no table)
--     iot_reader   simulator --verify, dashboards: read every table
--     CREATE ROLE bridge LOGIN PASSWORD '...' IN ROLE iot_bridge;

CREATE TABLE IF NOT EXISTS readings (
    sensor_id   integer          NOT NULL CHECK (sensor_id > 0),
    "timestamp" timestamptz      NOT NULL,
    variable    text             NOT NULL,
    value       double precision NOT NULL,
    unit        text             NOT NULL,
    ingested_at timestamptz      NOT NULL DEFAULT now(),
    revision    integer          NOT NULL DEFAULT 0 CHECK (revision >= 0),
    PRIMARY KEY (sensor_id, "timestamp", variable)
);

-- revision (README, "Corrections"): added to an older database once. A constant
-- default costs no table rewrite, and a worker of the release before, which does
-- not send the column, keeps working during a rolling upgrade.
ALTER TABLE readings ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 0 CHECK (revision >= 0);

COMMENT ON TABLE readings IS
    'One row per sensor reading; the natural key makes re-deliveries harmless.';

-- With TimescaleDB installed in this database, readings becomes a hypertable
-- partitioned by time (docs/scaling.md); without it, nothing happens. EXECUTE
-- keeps the function name unresolved where the extension is absent.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE $sql$SELECT create_hypertable('readings', 'timestamp',
                                               if_not_exists => true, migrate_data => true)$sql$;
    END IF;
END
$$;

-- The readings dashboard's "ingestion lag" selects by ingested_at. Rows arrive in
-- ingested_at order, so a BRIN index (a few pages, nearly free to keep up on the
-- insert path, unlike a second B-tree) narrows a time range to the blocks that
-- hold it instead of a scan of the whole table (benchmarks/dashboard_queries.py).
CREATE INDEX IF NOT EXISTS readings_ingested_at_brin
    ON readings USING brin (ingested_at) WITH (autosummarize = on);

-- Corrections (BRIDGE_ON_CONFLICT=update): each version a higher revision
-- replaced, appended in the transaction that replaced it. Append-only. A key's
-- replaced revisions only ever rise (a lower one is refused as stale), so
-- (key, revision) is unique: a version can never be recorded twice.
CREATE TABLE IF NOT EXISTS reading_revisions (
    id          bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sensor_id   integer          NOT NULL,
    "timestamp" timestamptz      NOT NULL,
    variable    text             NOT NULL,
    value       double precision NOT NULL,
    unit        text             NOT NULL,
    revision    integer          NOT NULL,
    ingested_at timestamptz      NOT NULL,
    replaced_at timestamptz      NOT NULL DEFAULT now(),
    replaced_by text             NOT NULL,
    UNIQUE (sensor_id, "timestamp", variable, revision)
);

CREATE INDEX IF NOT EXISTS reading_revisions_replaced_at_idx
    ON reading_revisions (replaced_at);

COMMENT ON TABLE reading_revisions IS
    'Versions of a reading replaced by a higher revision (BRIDGE_ON_CONFLICT=update), with who replaced them and when.';

-- Dead letters: every message (or array element) the bridge could not store
-- as a reading, with its raw bytes and the reason. Nothing is dropped silently.
CREATE TABLE IF NOT EXISTS rejected_messages (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text        NOT NULL,
    payload     bytea       NOT NULL,
    reason      text        NOT NULL,
    client_id   text        NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS rejected_messages_received_at_idx
    ON rejected_messages (received_at);

-- reason_code: why, as one word of a closed set (README, "Rejection codes";
-- iotcommon/contract.py RejectionCode), next to the human reason. Added to an
-- older database once: its rows get the code their reason words, or
-- 'unknown'. The default keeps a worker of the previous release, which does
-- not send the column, working during a rolling upgrade.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'rejected_messages'
                     AND column_name = 'reason_code') THEN
        ALTER TABLE rejected_messages ADD COLUMN reason_code text NOT NULL DEFAULT 'unknown';
        UPDATE rejected_messages SET reason_code = CASE
            WHEN reason LIKE 'conflict:%' THEN 'conflict'
            WHEN reason LIKE 'database refused%' THEN 'database_refused'
            WHEN reason LIKE 'internal error%' THEN 'internal_error'
            WHEN reason LIKE 'topic:%' THEN 'bad_topic'
            WHEN reason LIKE 'payload is empty%' THEN 'empty_payload'
            WHEN reason LIKE '%bytes; the limit is BRIDGE_MAX_PAYLOAD_BYTES%' THEN 'payload_too_large'
            WHEN reason LIKE '%not valid UTF-8%' THEN 'not_utf8'
            WHEN reason LIKE '%not valid JSON%' THEN 'not_json'
            WHEN reason LIKE '%must be a JSON object%' THEN 'not_object_or_array'
            WHEN reason LIKE 'payload is an empty array%' THEN 'empty_array'
            WHEN reason LIKE 'payload is an array of % readings; the limit is%' THEN 'array_too_long'
            WHEN reason LIKE '%does not match the topic''s sensor id%' THEN 'topic_mismatch'
            WHEN reason LIKE '%is required%' THEN 'missing_field'
            WHEN reason LIKE '%in the future; the limit is%' THEN 'future_timestamp'
            WHEN reason LIKE '%should have timezone info%' THEN 'naive_timestamp'
            WHEN reason LIKE '%control characters%' THEN 'invalid_text'
            WHEN reason LIKE '%finite number%' THEN 'not_finite'
            WHEN reason LIKE '%should be greater than%' OR reason LIKE '%should be less than%'
                 OR reason LIKE '%should have at least%' OR reason LIKE '%should have at most%' THEN 'out_of_range'
            WHEN reason LIKE 'timestamp:%' OR reason LIKE 'element %: timestamp:%' THEN 'bad_timestamp'
            WHEN reason LIKE '%should be a valid%' THEN 'wrong_type'
            ELSE 'unknown'
        END;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS rejected_messages_code_received_at_idx
    ON rejected_messages (reason_code, received_at);

COMMENT ON COLUMN rejected_messages.reason_code IS
    'Why, from a closed set (README, "Rejection codes"); reason says it in words.';

COMMENT ON TABLE rejected_messages IS
    'Messages the bridge refused, with the raw payload and a reason naming the field and rule.';

-- Dead-letter replay (python -m bridge replay-rejected): one row each time a
-- rejected message is re-validated. Append-only, so rejected_messages stays
-- untouched evidence and the history of every replay is kept.
CREATE TABLE IF NOT EXISTS rejected_replays (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rejected_id     bigint      NOT NULL REFERENCES rejected_messages (id),
    replayed_at     timestamptz NOT NULL DEFAULT now(),
    outcome         text        NOT NULL
                    CHECK (outcome IN ('stored', 'duplicate', 'still invalid', 'partly stored')),
    detail          text        NOT NULL,
    readings_stored integer     NOT NULL DEFAULT 0 CHECK (readings_stored >= 0)
);

CREATE INDEX IF NOT EXISTS rejected_replays_rejected_id_idx
    ON rejected_replays (rejected_id);

COMMENT ON TABLE rejected_replays IS
    'What each dead-letter replay did; rejected_messages itself is never updated or deleted.';

-- Least privilege for the bridge: insert readings and dead letters, read
-- only the key, value and unit of stored readings (to tell an exact
-- duplicate from a conflicting one). No UPDATE, DELETE, TRUNCATE or DDL.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iot_bridge') THEN
        CREATE ROLE iot_bridge NOLOGIN;
    END IF;
END
$$;

REVOKE ALL ON readings, rejected_messages, rejected_replays, reading_revisions FROM iot_bridge;
GRANT INSERT ON readings TO iot_bridge;
GRANT SELECT (sensor_id, "timestamp", variable, value, unit, revision) ON readings TO iot_bridge;
GRANT INSERT ON rejected_messages TO iot_bridge;

-- Corrections (BRIDGE_ON_CONFLICT=update): the bridge's rights, plus replacing
-- the value of a stored reading by a higher revision, reading what it replaces
-- (ingested_at too, which the revision record keeps) and appending that to
-- reading_revisions. Still no DELETE, TRUNCATE or DDL, and no UPDATE of a key.
-- Keep mode's iot_bridge stays insert-only: grant this role only to the logins
-- of workers that run in update mode.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iot_bridge_update') THEN
        CREATE ROLE iot_bridge_update NOLOGIN;
    END IF;
END
$$;

REVOKE ALL ON readings, rejected_messages, rejected_replays, reading_revisions FROM iot_bridge_update;
GRANT iot_bridge TO iot_bridge_update;
GRANT SELECT (ingested_at) ON readings TO iot_bridge_update;
GRANT UPDATE (value, unit, revision, ingested_at) ON readings TO iot_bridge_update;
GRANT SELECT (sensor_id, "timestamp", variable, value, unit, revision), INSERT ON reading_revisions
    TO iot_bridge_update;

-- Dead-letter replay, run by an operator, not by the workers: it reads the
-- dead letters it re-validates, inserts readings that are now valid (reading
-- back only what the bridge reads) and appends replay records. It can change
-- no evidence: no UPDATE, DELETE or TRUNCATE anywhere.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iot_replay') THEN
        CREATE ROLE iot_replay NOLOGIN;
    END IF;
END
$$;

REVOKE ALL ON readings, rejected_messages, rejected_replays, reading_revisions FROM iot_replay;
GRANT INSERT ON readings TO iot_replay;
GRANT SELECT (sensor_id, "timestamp", variable, value, unit, revision) ON readings TO iot_replay;
GRANT SELECT (id, received_at, topic, payload, reason, reason_code) ON rejected_messages TO iot_replay;
GRANT SELECT, INSERT ON rejected_replays TO iot_replay;

-- The watchdog only connects and runs SELECT 1: CONNECT on the database is
-- granted to PUBLIC by default, so the role needs no table privilege at all.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iot_watchdog') THEN
        CREATE ROLE iot_watchdog NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iot_reader') THEN
        CREATE ROLE iot_reader NOLOGIN;
    END IF;
END
$$;

REVOKE ALL ON readings, rejected_messages, rejected_replays, reading_revisions FROM iot_watchdog, iot_reader;
GRANT SELECT ON readings, rejected_messages, rejected_replays, reading_revisions TO iot_reader;

-- The watchdog's replication checks (WATCHDOG_STANDBYS) read pg_stat_replication,
-- whose columns only pg_read_all_stats (part of pg_monitor) shows: statistics, no
-- table. Granting a predefined role takes a superuser (or its admin option): an
-- owner without it gets a warning saying what to run, and the rest still applies.
DO $$
BEGIN
    GRANT pg_read_all_stats TO iot_watchdog;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'schema.sql: % (the watchdog cannot see the standbys); as a superuser run: GRANT pg_read_all_stats TO iot_watchdog', SQLERRM;
END
$$;

-- High availability (docs/high-availability.md): one marker row per bridge
-- worker (BRIDGE_CLIENT_ID), set to the batch's id in every batch transaction.
-- When a COMMIT's answer is lost, or comes back without the synchronous
-- standby's confirmation, the worker's next transaction reads the row on the
-- server it writes to now: the batch is there if and only if the row holds its
-- id, so the answer survives a failover (a transaction id would not: a promoted
-- standby hands out again the ids of transactions it never received). One row
-- per worker, rewritten in place: nothing to clean up. The bridge may update
-- only this table's marker columns.
CREATE TABLE IF NOT EXISTS bridge_progress (
    client_id  text        PRIMARY KEY,
    batch_id   uuid,
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE bridge_progress IS
    'Each bridge worker''s last batch id, written in the batch''s transaction: settles a COMMIT whose answer was lost.';

REVOKE ALL ON bridge_progress FROM iot_bridge, iot_bridge_update, iot_replay, iot_watchdog, iot_reader;
GRANT SELECT, INSERT, UPDATE (batch_id, updated_at) ON bridge_progress TO iot_bridge;
GRANT SELECT ON bridge_progress TO iot_reader;
