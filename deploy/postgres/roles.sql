-- The Docker stack's login roles, applied by the `migrate` service after schema.sql on
-- every `docker compose up`: each role is created once, and its password set from the
-- secrets volume every time, so a password generated for a new volume or changed in .env
-- takes effect on an existing database too (the image's initdb scripts run only once).
--
--   psql -v ON_ERROR_STOP=1 -v secrets=/secrets -f schema.sql -f roles.sql
--
-- psql reads each password itself (\set with a backquoted cat), so none is ever on a
-- command line (visible in `ps` / `docker top`); :'name' quotes it as an SQL literal,
-- so any character is safe.

\set bridge_pw `cat :'secrets'/bridge_db_password`
\set watchdog_pw `cat :'secrets'/watchdog_db_password`
\set reader_pw `cat :'secrets'/reader_db_password`

-- A failed cat leaves a variable empty without stopping psql, and an empty password
-- would silently take the role's login away: stop instead (exit 3, ON_ERROR_STOP).
SELECT :'bridge_pw' = '' OR :'watchdog_pw' = '' OR :'reader_pw' = '' AS password_missing \gset
\if :password_missing
    \warn 'roles.sql: a password file in' :'secrets' 'is missing or empty: did the init service run?'
    DO $$ BEGIN RAISE EXCEPTION 'missing login role password'; END $$;
\endif

SELECT format('CREATE ROLE %I LOGIN', name)
FROM (VALUES ('bridge'), ('watchdog'), ('reader')) AS wanted(name)
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name)
\gexec

ALTER ROLE bridge LOGIN PASSWORD :'bridge_pw';
ALTER ROLE watchdog LOGIN PASSWORD :'watchdog_pw';
ALTER ROLE reader LOGIN PASSWORD :'reader_pw';

GRANT iot_bridge TO bridge;
GRANT iot_watchdog TO watchdog;
GRANT iot_reader TO reader;

-- BRIDGE_ON_CONFLICT=update (README, "Corrections"): the workers' login may also replace a
-- reading by a higher revision. Granted only in that mode and taken back when .env returns
-- to keep, so keep mode's workers stay insert-only. The migrate service passes the mode
-- (-v on_conflict=...); without it, keep.
\if :{?on_conflict}
\else
    \set on_conflict keep
\endif
SELECT :'on_conflict' = 'update' AS update_mode \gset
\if :update_mode
    GRANT iot_bridge_update TO bridge;
\else
    REVOKE iot_bridge_update FROM bridge;
\endif
