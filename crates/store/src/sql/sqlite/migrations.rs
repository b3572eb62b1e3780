//! Versioned schema migrations.
//!
//! Migration `i` (1-based) moves the database from `user_version = i - 1` to `i`.
//! Migrations are append-only: a released one is never edited, a change is a new
//! entry. Each runs in its own transaction together with the version bump.

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the shop mirror, behaviour events, training interactions, state.
    r#"
    CREATE TABLE shop_orders (
        order_id         TEXT PRIMARY KEY,
        email            TEXT,
        customer_id      TEXT,
        financial_status TEXT NOT NULL,
        created_at       INTEGER NOT NULL,      -- Unix seconds
        line_items       TEXT NOT NULL,         -- the raw JSON as the shop holds it
        attributes       TEXT,                  -- columns we do not model, as a JSON object
        source           TEXT NOT NULL,         -- import | webhook | poll
        updated_at       INTEGER NOT NULL       -- Unix ms of the last change to this row
    );
    CREATE TABLE shop_order_items (
        order_id   TEXT NOT NULL REFERENCES shop_orders(order_id) ON DELETE CASCADE,
        line_no    INTEGER NOT NULL,
        product_id TEXT NOT NULL,
        variant_id TEXT,
        quantity   INTEGER NOT NULL,
        price      REAL,
        title      TEXT,
        PRIMARY KEY (order_id, line_no)
    );
    CREATE INDEX shop_order_items_product ON shop_order_items(product_id);
    CREATE TABLE shop_base_products (
        id          TEXT PRIMARY KEY,
        title       TEXT,
        category_id TEXT,
        price       REAL,
        attributes  TEXT,
        updated_at  INTEGER NOT NULL
    );
    CREATE INDEX shop_base_products_category ON shop_base_products(category_id);
    CREATE TABLE shop_end_products (
        id              TEXT PRIMARY KEY,
        base_product_id TEXT,
        designer_id     TEXT,
        title           TEXT,
        attributes      TEXT,
        updated_at      INTEGER NOT NULL
    );
    CREATE TABLE shop_images (
        id         TEXT PRIMARY KEY,
        type       TEXT,
        entity_id  TEXT,
        view_count INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER,
        attributes TEXT,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE shop_accounts (
        id         TEXT PRIMARY KEY,
        email      TEXT,
        created_at INTEGER,
        attributes TEXT,
        updated_at INTEGER NOT NULL
    );

    -- Storefront behaviour, in arrival order: `seq` is the ingestion sequence
    -- number that sync uses as its watermark (never a clock).
    CREATE TABLE behavior_events (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id     TEXT NOT NULL UNIQUE,
        event_type   TEXT NOT NULL,
        product_id   TEXT NOT NULL,
        user_id      TEXT,
        session_id   TEXT,
        device_id    TEXT,
        timestamp_ms INTEGER NOT NULL,
        request_id   TEXT,
        properties   TEXT,
        received_at  INTEGER NOT NULL,
        CHECK (user_id IS NOT NULL OR session_id IS NOT NULL OR device_id IS NOT NULL)
    );

    -- One row, one meaning. `origin` names what produced the row (an order, the
    -- image table, an event) so a writer can reconcile exactly its own rows.
    CREATE TABLE training_interactions (
        id               INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: exports use it as a watermark
        user_id          TEXT NOT NULL,
        item_id          TEXT NOT NULL,
        rating           REAL NOT NULL,
        timestamp        INTEGER NOT NULL,      -- Unix seconds
        interaction_type TEXT NOT NULL,
        source           TEXT NOT NULL,         -- existing_data | webhook | realtime | import
        synthetic        INTEGER NOT NULL DEFAULT 0,
        quantity         INTEGER NOT NULL DEFAULT 1,
        origin           TEXT,
        created_at       INTEGER NOT NULL,      -- Unix ms when the row was written
        UNIQUE (user_id, item_id, timestamp, interaction_type)
    );
    CREATE INDEX training_interactions_origin ON training_interactions(origin);
    CREATE INDEX training_interactions_created ON training_interactions(created_at);
    CREATE INDEX training_interactions_time ON training_interactions(timestamp);

    CREATE TABLE state (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    "#,
    // 2: live data: webhook deliveries (idempotency + order status history) and
    // identity links (anonymous session/device -> customer).
    r#"
    CREATE TABLE webhook_deliveries (
        delivery_id      TEXT PRIMARY KEY,      -- X-Shoplazza-Deduplication-ID
        topic            TEXT NOT NULL,
        shop_domain      TEXT,
        order_id         TEXT,
        financial_status TEXT,
        order_updated_at INTEGER,               -- the order's updated_at (Unix s), to ignore stale deliveries
        outcome          TEXT NOT NULL,         -- applied | stale | recorded
        received_at      INTEGER NOT NULL
    );
    CREATE INDEX webhook_deliveries_order ON webhook_deliveries(order_id);

    -- `linked_seq` orders links for re-attribution; the first link of an id wins.
    CREATE TABLE identity_links (
        linked_seq   INTEGER PRIMARY KEY AUTOINCREMENT,
        anonymous_id TEXT NOT NULL UNIQUE,      -- session:<id> | device:<id>
        user_id      TEXT NOT NULL,
        linked_at    INTEGER NOT NULL
    );

    -- Customers erased on request (training ids, i.e. keyed hashes): a later
    -- extract of the shop's old orders must not bring them back.
    CREATE TABLE forgotten_users (
        user_id      TEXT PRIMARY KEY,
        forgotten_at INTEGER NOT NULL
    );
    "#,
    // 3: dataset versions and data-quality reports.
    r#"
    -- One row per dataset version. A version is reserved (status 'building')
    -- before its files are written and published ('ready') once its manifest is
    -- in the object store, so two builds never write the same version.
    CREATE TABLE dataset_versions (
        version         TEXT PRIMARY KEY,      -- 'v1.0'
        major           INTEGER NOT NULL,
        minor           INTEGER NOT NULL,
        kind            TEXT NOT NULL,         -- full | increment
        parent          TEXT,                  -- the version an increment follows
        status          TEXT NOT NULL,         -- building | ready
        created_at      INTEGER NOT NULL,      -- Unix ms
        rows            INTEGER NOT NULL DEFAULT 0,
        train_rows      INTEGER NOT NULL DEFAULT 0,
        test_rows       INTEGER NOT NULL DEFAULT 0,
        split_timestamp INTEGER,
        max_interaction_id INTEGER NOT NULL DEFAULT 0,
        fingerprint     TEXT,                  -- sha256 of the data files' checksums
        manifest_key    TEXT,
        manifest        TEXT,                  -- the manifest JSON, as written
        UNIQUE (major, minor)
    );

    -- Every data-quality report, so the next one can say what is new.
    CREATE TABLE quality_reports (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        date       TEXT NOT NULL,              -- YYYY-MM-DD (UTC)
        created_at INTEGER NOT NULL,           -- Unix ms
        max_interaction_id INTEGER NOT NULL,
        max_event_seq      INTEGER NOT NULL,
        body       TEXT NOT NULL               -- the report JSON
    );
    "#,
    // 4: the model registry.
    r#"
    -- One row per trained model. A version is reserved ('training') before its
    -- artifact is written and becomes a 'candidate' once the artifact is in the
    -- object store; promotion makes it 'active' and retires the previous active
    -- one in the same transaction, so at most one version is ever active.
    CREATE TABLE model_versions (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        version         TEXT NOT NULL UNIQUE,  -- 'm1', 'm2', ...
        kind            TEXT NOT NULL,         -- popular | als | ease
        dataset_version TEXT NOT NULL,
        params          TEXT NOT NULL,         -- hyper-parameters (the model spec), JSON
        metrics         TEXT,                  -- warm-protocol report (metrics, metrics_ci, baseline), JSON
        artifact_key    TEXT,
        sha256          TEXT,
        status          TEXT NOT NULL,         -- training | candidate | active | retired
        created_at      INTEGER NOT NULL,      -- Unix ms
        promoted_at     INTEGER                -- Unix ms
    );
    CREATE UNIQUE INDEX model_versions_one_active ON model_versions(status) WHERE status = 'active';
    "#,
    // 5: serving's log, A/B experiments, catalogue rules, the jobs' journal.
    r#"
    -- Every recommendation answered: who asked, which model and arm answered,
    -- and what was shown (JSON array of item ids, best first). Impressions,
    -- clicks and purchases are joined to it by request_id and by user.
    CREATE TABLE recommendation_log (
        request_id    TEXT PRIMARY KEY,
        created_at    INTEGER NOT NULL,        -- Unix ms
        user_id       TEXT,                    -- training id (hashed, or session:<id>); NULL for strangers
        endpoint      TEXT NOT NULL,           -- recommendations | similar | popular
        model_version TEXT,
        experiment_id INTEGER,
        variant       TEXT NOT NULL,           -- control | treatment
        items         TEXT NOT NULL
    );
    -- Only answers inside an experiment are indexed: the log is written at the
    -- rate of answers, and every index slows the answers served beside it.
    -- (Retention scans it once a day.)
    CREATE INDEX recommendation_log_experiment ON recommendation_log(experiment_id, variant)
        WHERE experiment_id IS NOT NULL;
    CREATE INDEX behavior_events_request ON behavior_events(request_id) WHERE request_id IS NOT NULL;

    -- A/B tests between two model versions; at most one runs at a time.
    CREATE TABLE experiments (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        control     TEXT NOT NULL,
        treatment   TEXT NOT NULL,
        traffic     INTEGER NOT NULL CHECK (traffic BETWEEN 1 AND 99), -- % of units to treatment
        status      TEXT NOT NULL,             -- running | stopped
        started_at  INTEGER NOT NULL,          -- Unix ms
        stopped_at  INTEGER,
        outcome     TEXT,                      -- promoted | rolled_back | stopped
        started_by  TEXT NOT NULL              -- cli | admin | retrain
    );
    CREATE UNIQUE INDEX experiments_one_running ON experiments(status) WHERE status = 'running';

    -- What the shop decides over the models: items never shown, pinned to a
    -- position, or boosted.
    CREATE TABLE catalog_rules (
        item_id    TEXT PRIMARY KEY,
        rule       TEXT NOT NULL CHECK (rule IN ('hide', 'pin', 'boost')),
        value      REAL NOT NULL DEFAULT 0,    -- pin: position (1 = first); boost: strength
        updated_at INTEGER NOT NULL
    );

    -- The scheduled and manual jobs (retrain loop, sync, report, retention):
    -- what each run did, step by step, and why it failed.
    CREATE TABLE job_runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        job         TEXT NOT NULL,
        started_by  TEXT NOT NULL,             -- schedule | cli | admin
        status      TEXT NOT NULL,             -- running | ok | skipped | failed
        started_at  INTEGER NOT NULL,          -- Unix ms
        finished_at INTEGER,
        steps       TEXT NOT NULL DEFAULT '[]',-- JSON [{step, at, detail}]
        error       TEXT
    );
    CREATE INDEX job_runs_job ON job_runs(job, started_at);
    "#,
    // 6: a shopper's latest interactions, read on every recommendation, in
    // index order (no sort of all their rows to keep the last 500).
    r#"
    CREATE INDEX training_interactions_user_time ON training_interactions(user_id, timestamp);
    "#,
    // 7: the shop's categories (so a category is asked by name), and a design's
    // own category and price, for designs that arrive by webhook before (or
    // without) their base product.
    r#"
    CREATE TABLE shop_categories (
        id         TEXT PRIMARY KEY,
        name       TEXT,
        attributes TEXT,
        updated_at INTEGER NOT NULL
    );
    ALTER TABLE shop_end_products ADD COLUMN category_id TEXT;
    ALTER TABLE shop_end_products ADD COLUMN price REAL;
    "#,
    // 8: who holds a job's lease (host/pid/process start), so a run whose
    // process died (kill -9, a crash) is taken over at once, not after hours;
    // and a shopper's unsynced events, read on every recommendation, found by
    // index (customer or session, then seq) instead of a scan past the watermark.
    r#"
    ALTER TABLE job_runs ADD COLUMN owner TEXT;
    CREATE INDEX behavior_events_user_seq ON behavior_events(user_id, seq) WHERE user_id IS NOT NULL;
    CREATE INDEX behavior_events_session_seq ON behavior_events(session_id, seq) WHERE session_id IS NOT NULL;
    "#,
    // 9: a running job's heartbeat (Unix ms), renewed by its holder every few
    // seconds: a lease whose heartbeat is older than a minute is taken over
    // by whichever replica asks next, on any host.
    r#"
    ALTER TABLE job_runs ADD COLUMN heartbeat_at INTEGER;
    "#,
    // 10: who is building a dataset version or training a model version, so a
    // reservation whose process died is swept instead of staying forever.
    r#"
    ALTER TABLE dataset_versions ADD COLUMN owner TEXT;
    ALTER TABLE model_versions ADD COLUMN owner TEXT;
    "#,
    // 11: a shopper's history, read on every recommendation, from the index
    // alone: 6's index found the rows, but each of up to 500 was then read from
    // its own page of the table (2.7 ms for a heavy customer, 0.4 ms like this).
    r#"
    CREATE INDEX training_interactions_user_history
        ON training_interactions(user_id, timestamp, item_id, interaction_type, rating, synthetic);
    -- Dropped once the new one is built: the drop's exclusive lock lasts a moment.
    DROP INDEX training_interactions_user_time;
    "#,
    // 12: what a customer bought, read on every recommendation, among their
    // purchases only (a heavy customer's purchases found past their views cost
    // 0.6 ms on the demo shop).
    r#"
    CREATE INDEX training_interactions_purchases ON training_interactions(user_id, item_id)
        WHERE interaction_type = 'purchase';
    "#,
    // 13: what changed in the interactions besides new rows, so that a dataset
    // increment re-reads only the days that changed (new rows are found by id,
    // which is never reused). Triggers, so that no writer can forget. (An
    // `INSERT OR REPLACE` would delete without firing them, unless
    // recursive_triggers is on: no writer uses it.)
    r#"
    CREATE TABLE dataset_changes (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        timestamp INTEGER NOT NULL          -- a changed interaction's timestamp
    );
    ALTER TABLE dataset_versions ADD COLUMN max_change_seq INTEGER NOT NULL DEFAULT 0;
    CREATE TRIGGER training_interactions_changed AFTER UPDATE ON training_interactions
    WHEN OLD.user_id IS NOT NEW.user_id OR OLD.item_id IS NOT NEW.item_id
      OR OLD.rating IS NOT NEW.rating OR OLD.timestamp IS NOT NEW.timestamp
      OR OLD.interaction_type IS NOT NEW.interaction_type OR OLD.source IS NOT NEW.source
      OR OLD.synthetic IS NOT NEW.synthetic OR OLD.quantity IS NOT NEW.quantity
      OR OLD.origin IS NOT NEW.origin
    BEGIN
        INSERT INTO dataset_changes (timestamp) VALUES (OLD.timestamp);
        INSERT INTO dataset_changes (timestamp) SELECT NEW.timestamp
            WHERE NEW.timestamp <> OLD.timestamp;
    END;
    CREATE TRIGGER training_interactions_deleted AFTER DELETE ON training_interactions
    BEGIN
        INSERT INTO dataset_changes (timestamp) VALUES (OLD.timestamp);
    END;
    -- An order that becomes (or stops being) refunded, cancelled or voided adds
    -- (or removes) its rows from every dataset.
    CREATE TRIGGER shop_orders_refund_inserted AFTER INSERT ON shop_orders
    WHEN lower(NEW.financial_status) IN ('refunded', 'cancelled', 'voided')
    BEGIN
        INSERT INTO dataset_changes (timestamp)
            SELECT timestamp FROM training_interactions WHERE origin = 'order:' || NEW.order_id;
    END;
    CREATE TRIGGER shop_orders_refund_updated AFTER UPDATE ON shop_orders
    WHEN (lower(OLD.financial_status) IN ('refunded', 'cancelled', 'voided'))
      <> (lower(NEW.financial_status) IN ('refunded', 'cancelled', 'voided'))
      OR OLD.order_id IS NOT NEW.order_id
    BEGIN
        INSERT INTO dataset_changes (timestamp)
            SELECT timestamp FROM training_interactions
             WHERE origin IN ('order:' || OLD.order_id, 'order:' || NEW.order_id);
    END;
    CREATE TRIGGER shop_orders_refund_deleted AFTER DELETE ON shop_orders
    WHEN lower(OLD.financial_status) IN ('refunded', 'cancelled', 'voided')
    BEGIN
        INSERT INTO dataset_changes (timestamp)
            SELECT timestamp FROM training_interactions WHERE origin = 'order:' || OLD.order_id;
    END;
    "#,
];
