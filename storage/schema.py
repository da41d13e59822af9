"""The SQLite schema, as an ordered list of migrations. A database records the last one applied."""

from __future__ import annotations

SCHEMA_VERSION = 7

MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE conversations (
        key          TEXT PRIMARY KEY,
        platform     TEXT NOT NULL,
        channel      TEXT NOT NULL,
        started_by   TEXT NOT NULL,
        generation   INTEGER NOT NULL DEFAULT 0,
        main_thread  TEXT,
        created_at   REAL NOT NULL
    );
    CREATE INDEX conversations_channel ON conversations(channel);

    CREATE TABLE sub_threads (
        conversation TEXT NOT NULL,
        generation   INTEGER NOT NULL,
        path         TEXT NOT NULL,
        thread_id    TEXT NOT NULL,
        PRIMARY KEY (conversation, generation, path)
    );

    CREATE TABLE inbox (
        event_id     TEXT PRIMARY KEY,
        conversation TEXT NOT NULL,
        platform     TEXT NOT NULL,
        channel      TEXT NOT NULL,
        user_id      TEXT NOT NULL,
        text         TEXT NOT NULL,
        route        TEXT NOT NULL,
        state        TEXT NOT NULL DEFAULT 'pending',
        turn_id      TEXT,
        received_at  REAL NOT NULL,
        seq          INTEGER NOT NULL
    );
    CREATE INDEX inbox_pending ON inbox(conversation, state, seq);

    CREATE TABLE turns (
        id           TEXT PRIMARY KEY,
        conversation TEXT NOT NULL,
        generation   INTEGER NOT NULL,
        state        TEXT NOT NULL,
        reply_kind   TEXT,
        reply_text   TEXT,
        delivered_ref TEXT,
        retries      INTEGER NOT NULL DEFAULT 0,
        input_tokens  INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        created_at   REAL NOT NULL,
        updated_at   REAL NOT NULL
    );
    CREATE INDEX turns_state ON turns(state);
    CREATE INDEX turns_conversation ON turns(conversation);

    CREATE TABLE runs (
        remote_id    TEXT PRIMARY KEY,
        turn_id      TEXT NOT NULL,
        scope        TEXT NOT NULL,
        agent        TEXT NOT NULL,
        thread_id    TEXT NOT NULL,
        status       TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        last_seq     INTEGER,
        input        TEXT NOT NULL,
        created_at   REAL NOT NULL,
        updated_at   REAL NOT NULL
    );
    CREATE INDEX runs_scope ON runs(turn_id, scope, created_at);

    CREATE TABLE tool_calls (
        turn_id      TEXT NOT NULL,
        scope        TEXT NOT NULL,
        call_id      TEXT NOT NULL,
        name         TEXT NOT NULL,
        arguments    TEXT NOT NULL,
        output       TEXT,
        ok           INTEGER,
        PRIMARY KEY (turn_id, scope, call_id)
    );

    CREATE TABLE transcript (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation TEXT NOT NULL,
        generation   INTEGER NOT NULL,
        thread_path  TEXT NOT NULL,
        role         TEXT NOT NULL,
        text         TEXT NOT NULL,
        turn_id      TEXT,
        reset        INTEGER NOT NULL DEFAULT 0,
        created_at   REAL NOT NULL
    );
    CREATE INDEX transcript_thread ON transcript(conversation, generation, thread_path, id);

    CREATE TABLE audit (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        at           REAL NOT NULL,
        platform     TEXT NOT NULL,
        actor        TEXT NOT NULL,
        action       TEXT NOT NULL,
        target       TEXT NOT NULL,
        outcome      TEXT NOT NULL,
        detail       TEXT NOT NULL DEFAULT ''
    );

    CREATE TABLE agents (
        backend      TEXT NOT NULL,
        name         TEXT NOT NULL,
        remote_id    TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        PRIMARY KEY (backend, name)
    );
    """,
    # 2: the `chat` backend keeps its threads here (no remote thread exists): each thread's messages in the
    # provider's own format, tool calls and outputs included; each finished run, so a run is never applied twice;
    # the summaries that fold a thread's oldest messages; and which provider holds each remote thread of a team
    # that mixes providers.
    """
    CREATE TABLE chat_threads (
        thread_id    TEXT PRIMARY KEY,
        created_at   REAL NOT NULL
    );

    CREATE TABLE chat_messages (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        thread_id    TEXT NOT NULL,
        run_id       TEXT,
        message      TEXT NOT NULL,
        created_at   REAL NOT NULL
    );
    CREATE INDEX chat_messages_thread ON chat_messages(thread_id, id);

    CREATE TABLE chat_runs (
        run_id       TEXT PRIMARY KEY,
        thread_id    TEXT NOT NULL,
        state        TEXT NOT NULL,
        created_at   REAL NOT NULL
    );

    CREATE TABLE chat_summaries (
        thread_id    TEXT NOT NULL,
        upto_id      INTEGER NOT NULL,
        text         TEXT NOT NULL,
        created_at   REAL NOT NULL,
        PRIMARY KEY (thread_id, upto_id)
    );

    CREATE TABLE thread_providers (
        thread_id    TEXT PRIMARY KEY,
        provider     TEXT NOT NULL
    );
    """,
    # 3: message-rate counters and daily usage (issue 16: rate limits and budgets); inbox by user (forget)
    """
    CREATE TABLE rate_counters (
        bucket       TEXT NOT NULL,
        minute       INTEGER NOT NULL,
        count        INTEGER NOT NULL,
        PRIMARY KEY (bucket, minute)
    );

    CREATE TABLE usage (
        day            TEXT NOT NULL,
        bucket         TEXT NOT NULL,
        input_tokens   INTEGER NOT NULL DEFAULT 0,
        output_tokens  INTEGER NOT NULL DEFAULT 0,
        cost           REAL NOT NULL DEFAULT 0,
        granted_tokens INTEGER NOT NULL DEFAULT 0,
        granted_cost   REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (day, bucket)
    );

    CREATE INDEX inbox_user ON inbox(user_id);
    """,
    # 4: indexes so that accepting a message and the worker's queries stay fast as history grows: the inbox's
    # next seq is MAX(seq) (an index lookup now, a scan before), a turn's messages, conversations with pending ones,
    # and the runs still active (the partial index matches the literal list in `SQLiteStore.active_runs`)
    """
    CREATE INDEX inbox_seq ON inbox(seq);
    CREATE INDEX inbox_turn ON inbox(turn_id);
    CREATE INDEX inbox_pending_conversations ON inbox(conversation) WHERE state = 'pending';
    CREATE INDEX runs_active ON runs(turn_id)
        WHERE status NOT IN ('completed', 'failed', 'cancelled', 'expired', 'incomplete', 'superseded');
    """,
    # 5 (issue 14 part B, token accounting): the provider's usage of each run, cached input included, so figures
    # per assistant, turn and conversation are sums of runs; and cached input in the daily usage of issue 16.
    """
    ALTER TABLE runs ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0;
    """,
    # 6 (issue 14, handoffs): which assistant holds each conversation generation's main thread and its key/value
    # state; every transfer, unique per (turn, call) so a resumed turn never applies one twice; who answered a turn
    """
    CREATE TABLE handoff_state (
        conversation TEXT NOT NULL,
        generation   INTEGER NOT NULL,
        active       TEXT NOT NULL,
        state        TEXT NOT NULL DEFAULT '{}',
        from_agent   TEXT,
        reason       TEXT NOT NULL DEFAULT '',
        notes        TEXT NOT NULL DEFAULT '',
        updated_at   REAL NOT NULL,
        PRIMARY KEY (conversation, generation)
    );

    CREATE TABLE handoffs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation TEXT NOT NULL,
        generation   INTEGER NOT NULL,
        turn_id      TEXT,
        call_id      TEXT NOT NULL,
        from_agent   TEXT NOT NULL,
        to_agent     TEXT NOT NULL,
        reason       TEXT NOT NULL DEFAULT '',
        notes        TEXT NOT NULL DEFAULT '',
        state        TEXT NOT NULL DEFAULT '{}',
        source       TEXT NOT NULL,
        at           REAL NOT NULL,
        UNIQUE (turn_id, call_id)
    );
    CREATE INDEX handoffs_conversation ON handoffs(conversation, generation, id);

    CREATE TABLE turn_agents (
        turn_id      TEXT PRIMARY KEY,
        conversation TEXT NOT NULL,
        generation   INTEGER NOT NULL,
        agent        TEXT NOT NULL
    );
    CREATE INDEX turn_agents_conversation ON turn_agents(conversation, generation);
    """,
    # 7: the `responses` backend's chained threads (`[openai] threads = "chains"`): per thread, the stored response
    # its next run chains from (`previous_response_id`; NULL before the first) and the function-call ids of that
    # response the next run must answer "cancelled" (a JSON array). Provider ids only: no user text.
    """
    CREATE TABLE response_chains (
        thread_id    TEXT PRIMARY KEY,
        head         TEXT,
        cancelled    TEXT NOT NULL DEFAULT '[]',
        updated_at   REAL NOT NULL
    );
    """,
]
