"""The store's explicit schema, as numbered migrations (SQLite's PRAGMA user_version, or
PostgreSQL's schema_version table, is the version).

Append a migration to change the schema; never edit one that has shipped. Every statement is
plain SQL: callkpi/schema_postgres.py derives the PostgreSQL text of each migration from this
one (types, identity keys, expression indexes), with an override only where SQLite needs a
statement PostgreSQL does differently (a table rebuild).
"""

MIGRATIONS: dict[int, str] = {
    1: """
-- One row per canonical event (callkpi.events.CallEvent, same column order).
CREATE TABLE events (
    id            INTEGER PRIMARY KEY,
    server        TEXT    NOT NULL,
    call_id       TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    queue         TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    tsec          INTEGER NOT NULL,
    discr         TEXT    NOT NULL,
    ts            REAL    NOT NULL,
    source        TEXT    NOT NULL,
    wait_s        REAL,
    talk_s        REAL,
    ring_s        REAL,
    position      INTEGER,
    orig_position INTEGER,
    reason        TEXT    NOT NULL,
    caller_number TEXT    NOT NULL,
    caller_name   TEXT    NOT NULL,
    value         TEXT    NOT NULL,
    extra         TEXT    NOT NULL,
    -- the natural key: the same event twice, or from AMI and queue_log, is stored once.
    -- call_id, tsec first: a log is written in time order and uniqueids grow with time, so
    -- a bulk ingest appends to this index instead of inserting all over it
    UNIQUE (call_id, tsec, kind, queue, agent, discr, server)
);
CREATE INDEX events_tsec ON events (tsec);
-- only AMI rows: lets a queue_log batch find the AMI copies it replaces without a scan
CREATE INDEX events_ami_tsec ON events (tsec) WHERE source = 'ami';

-- Input that could not become an event: where it was and why. Never silently dropped.
CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,
    origin      TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    line_no     INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    raw         TEXT    NOT NULL,
    received_at REAL    NOT NULL,
    UNIQUE (source, origin, position, raw)
);

-- How far each followed file has been stored (written with the events it covers).
CREATE TABLE checkpoints (
    stream     TEXT PRIMARY KEY,
    file_id    TEXT    NOT NULL,
    head       TEXT    NOT NULL,
    offset     INTEGER NOT NULL,
    line_no    INTEGER NOT NULL,
    updated_at REAL    NOT NULL
);

-- uniqueid -> linkedid of the call a channel belongs to (AMI), to follow transfers.
CREATE TABLE call_links (
    server    TEXT NOT NULL,
    uniqueid  TEXT NOT NULL,
    linked_id TEXT NOT NULL,
    ts        REAL NOT NULL,
    PRIMARY KEY (server, uniqueid)
);
CREATE INDEX call_links_linked ON call_links (server, linked_id);

-- The agent roster, for attrition: who was hired when and who left when.
CREATE TABLE agents (
    name     TEXT PRIMARY KEY,
    hired_on TEXT NOT NULL,
    left_on  TEXT
);

-- Reports already e-mailed, so a catch-up run does not send a day twice.
CREATE TABLE reports_sent (
    day        TEXT NOT NULL,
    recipients TEXT NOT NULL,
    sent_at    REAL NOT NULL,
    PRIMARY KEY (day, recipients)
);
""",
    2: """
-- Per-call facts (reports/facts.py): one row per queue call, derived from the events and
-- rebuilt incrementally; id is the events.id of the call's enter-queue event.
CREATE TABLE queue_calls (
    id            INTEGER PRIMARY KEY,
    server        TEXT    NOT NULL,
    call_id       TEXT    NOT NULL,
    queue         TEXT    NOT NULL,
    entered_ts    REAL    NOT NULL,
    entered_tsec  INTEGER NOT NULL,
    ended_ts      REAL,
    outcome       TEXT    NOT NULL,
    wait_s        REAL,
    connect_ts    REAL,
    agent         TEXT    NOT NULL,
    bridged_s     REAL,
    talk_s        REAL,
    hold_s        REAL,
    acw_s         REAL,
    caller_number TEXT    NOT NULL,
    disposition   TEXT    NOT NULL,
    transferred   INTEGER NOT NULL,
    prev_gap_s    REAL,
    next_gap_s    REAL,
    unsettled     INTEGER NOT NULL,
    entered_bucket INTEGER  -- the 15-minute UTC bucket it entered in: entered_tsec / 900
);
CREATE INDEX queue_calls_entered ON queue_calls (entered_tsec);
-- Every column the report's grouped sums read, led by the bucket: they read the index alone,
-- in group order, no sort (its cost in disk and its gain: docs/reports.md).
CREATE INDEX queue_calls_report ON queue_calls (
    entered_bucket, queue, outcome, agent, wait_s, talk_s, hold_s, acw_s, transferred,
    caller_number, prev_gap_s, next_gap_s, entered_ts, disposition);
CREATE INDEX queue_calls_call ON queue_calls (server, call_id);
CREATE INDEX queue_calls_caller ON queue_calls (caller_number, entered_ts);

-- A queue member's time in a queue (member added / logged in until removed / logged off).
CREATE TABLE agent_sessions (
    server   TEXT NOT NULL,
    agent    TEXT NOT NULL,
    queue    TEXT NOT NULL,
    start_ts REAL NOT NULL,
    end_ts   REAL
);
CREATE INDEX agent_sessions_start ON agent_sessions (start_ts);

-- An agent's pause (all queues at once), with its reason.
CREATE TABLE agent_pauses (
    server   TEXT NOT NULL,
    agent    TEXT NOT NULL,
    reason   TEXT NOT NULL,
    start_ts REAL NOT NULL,
    end_ts   REAL
);
CREATE INDEX agent_pauses_start ON agent_pauses (start_ts);

-- Survey answers linked to the queue call they rate (id: the survey-answer events.id).
CREATE TABLE survey_answers (
    id           INTEGER PRIMARY KEY,
    server       TEXT    NOT NULL,
    call_id      TEXT    NOT NULL,
    queue_call   INTEGER,
    queue        TEXT    NOT NULL,
    agent        TEXT    NOT NULL,
    entered_tsec INTEGER NOT NULL,
    answered     INTEGER NOT NULL,
    question     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    value        TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    ts           REAL    NOT NULL
);
-- Every column the report's survey queries read, led by the answer's 15-minute bucket: the
-- survey sums per (bucket, queue) read the index alone, in group order.
CREATE INDEX survey_answers_bucket ON survey_answers (
    entered_tsec / 900, queue, agent, question, kind, status, value, answered, queue_call,
    server, call_id, entered_tsec);

-- How far the facts are built: the last events.id derived, the settings they used.
CREATE TABLE facts_state (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
""",
    3: """
-- The natural key led by tsec, as its own named index, and no separate tsec index: every
-- query on events by time reads this key (facts, IVR and ring counts, the AMI twins, a
-- survey's talk time), and a bulk ingest maintains one index fewer. A
-- time-ordered log appends to it. SQLite cannot change a table's UNIQUE constraint in
-- place: the table is rebuilt with its rows and ids unchanged.
CREATE TABLE events_v3 (
    id            INTEGER PRIMARY KEY,
    server        TEXT    NOT NULL,
    call_id       TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    queue         TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    tsec          INTEGER NOT NULL,
    discr         TEXT    NOT NULL,
    ts            REAL    NOT NULL,
    source        TEXT    NOT NULL,
    wait_s        REAL,
    talk_s        REAL,
    ring_s        REAL,
    position      INTEGER,
    orig_position INTEGER,
    reason        TEXT    NOT NULL,
    caller_number TEXT    NOT NULL,
    caller_name   TEXT    NOT NULL,
    value         TEXT    NOT NULL,
    extra         TEXT    NOT NULL
);
INSERT INTO events_v3 SELECT * FROM events;
DROP TABLE events;
ALTER TABLE events_v3 RENAME TO events;
CREATE UNIQUE INDEX events_key ON events (tsec, call_id, kind, queue, agent, discr, server);
CREATE INDEX events_ami_tsec ON events (tsec) WHERE source = 'ami';
""",
    4: """
-- The facts of the KPI rules of docs/kpis.md. A queue call answered and cut by a restart
-- (its talk unknown); whether it is its phone call's FCR contact (a call moved or transferred
-- between queues is one contact: its last answered leg); the gap to the caller's previous
-- answered phone call (an abandoned attempt is no prior contact).
ALTER TABLE queue_calls ADD COLUMN ended_by_restart INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue_calls ADD COLUMN fcr_contact INTEGER NOT NULL DEFAULT 1;
ALTER TABLE queue_calls ADD COLUMN fcr_prev_gap_s REAL;
DROP INDEX queue_calls_report;
CREATE INDEX queue_calls_report ON queue_calls (
    entered_bucket, queue, outcome, agent, wait_s, talk_s, hold_s, acw_s, transferred,
    caller_number, prev_gap_s, next_gap_s, entered_ts, disposition, ended_by_restart,
    fcr_contact, fcr_prev_gap_s);
-- One survey per call: the session an answer came from, and whether it counts (the call's
-- first survey session does; an orphan, whose call is not known, counts nowhere but the
-- survey summary).
ALTER TABLE survey_answers ADD COLUMN session TEXT NOT NULL DEFAULT '';
ALTER TABLE survey_answers ADD COLUMN counted INTEGER NOT NULL DEFAULT 1;
DROP INDEX survey_answers_bucket;
CREATE INDEX survey_answers_bucket ON survey_answers (
    entered_tsec / 900, queue, agent, question, kind, status, value, answered, queue_call,
    server, call_id, entered_tsec, counted);
-- Member interface -> member name, learned from AMI member events (which carry both), for
-- queue_log lines that name a member by its interface (log_membername_as_agent = no).
CREATE TABLE agent_aliases (
    server    TEXT NOT NULL,
    interface TEXT NOT NULL,
    name      TEXT NOT NULL,
    PRIMARY KEY (server, interface)
);
-- IVR paths of sites that log QueueMetrics-style `INFO|IVRAPPEND|<key>|<menu>` lines: one
-- per call (id: the events.id of its first IVRAPPEND), what it pressed in which menus, and
-- whether it then reached a queue; counted with callkpi's own IVR exits.
CREATE TABLE ivr_paths (
    id       INTEGER PRIMARY KEY,
    server   TEXT    NOT NULL,
    call_id  TEXT    NOT NULL,
    first_ts REAL    NOT NULL,
    ts       REAL    NOT NULL,
    tsec     INTEGER NOT NULL,
    path     TEXT    NOT NULL,
    node     TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,
    queue    TEXT    NOT NULL
);
CREATE INDEX ivr_paths_tsec ON ivr_paths (tsec);
-- the rules changed: the facts are derived again from the events at the next refresh
DELETE FROM facts_state;
""",
    5: """
-- The roster as employment periods: an agent who left and was hired again has two rows, the
-- first with its leaving date (the agents table kept one hire and one leaving per name).
CREATE TABLE agent_employment (
    name     TEXT NOT NULL,
    hired_on TEXT NOT NULL,
    left_on  TEXT,
    PRIMARY KEY (name, hired_on)
);
-- A row hired after it left is a re-hire that overwrote the hire date: employed since then
-- (the earlier period's hire date is gone; its leaving date cannot stand on its own).
INSERT INTO agent_employment (name, hired_on, left_on)
SELECT name, hired_on, CASE WHEN left_on < hired_on THEN NULL ELSE left_on END FROM agents;
DROP TABLE agents;

-- A report e-mail being sent: claimed before the relay is contacted, so two `callkpi email`
-- runs for the same day and recipients send it once. Dropped when the relay refused the mail
-- (a retry sends it), replaced by a reports_sent row once the relay took it; one left behind
-- by a run that died while sending says the mail may or may not have gone.
CREATE TABLE report_claims (
    day        TEXT NOT NULL,
    recipients TEXT NOT NULL,
    owner      TEXT NOT NULL,  -- the sending process: host:pid:boot id:start time
    claimed_at REAL NOT NULL,
    PRIMARY KEY (day, recipients)
);
""",
    6: """
-- The write sequence: every write transaction of events takes the next number from this
-- one-row counter as its first statement. The row lock serialises the writers until they
-- commit, from any number of processes and hosts, so events.id is handed out in commit
-- order (and queue_log's record taking the place of an AMI row takes a new id): a reader
-- that has seen every event up to max(id) finds what is new since by id > that. It is also
-- what lets the AMI/queue_log twin rule see every row committed before it.
CREATE TABLE write_seq (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO write_seq (id, seq) VALUES (1, 0);
""",
    7: """
-- Several servers in one store: a report of some servers, or with servers kept apart, reads
-- each call's server from the covering index too, instead of the table row by row.
DROP INDEX queue_calls_report;
CREATE INDEX queue_calls_report ON queue_calls (
    entered_bucket, queue, outcome, agent, wait_s, talk_s, hold_s, acw_s, transferred,
    caller_number, prev_gap_s, next_gap_s, entered_ts, disposition, ended_by_restart,
    fcr_contact, fcr_prev_gap_s, server);
""",
    8: """
-- The survey's "skip callers who answered in the last N days" rule: one caller's answers on
-- one server, by time, without reading N days of every event.
CREATE INDEX events_survey_callers ON events (server, caller_number, tsec)
    WHERE kind = 'survey-answer';
""",
}

SCHEMA_VERSION = max(MIGRATIONS)
