//! Moving a shop from one store to another (`manirec store copy`): every
//! table, row for row, from one consistent snapshot of the source, so a shop
//! that started on the embedded SQLite file can grow onto PostgreSQL (or back)
//! without losing anything.
//!
//! The copy is an upsert keyed by each table's primary key, so running it
//! again copies what is new and rewrites what changed, and never doubles a
//! row. The ids that exports use as watermarks (`training_interactions.id`,
//! `behavior_events.seq`, …) keep their values, and the target's id counters
//! continue past the source's highest id ever drawn, so an id is never reused
//! across the move. The copy ends by comparing every table's row count with
//! the source's snapshot: a target that held rows of another shop fails there,
//! loudly, instead of silently mixing two shops.

use std::collections::BTreeSet;

use crate::sql::{params, Conn, Dialect, OwnedValue, ToParam};
use crate::{Error, Result, Store};

/// One table the copy moves, in an order that satisfies its foreign keys.
struct Table {
    name: &'static str,
    /// Its primary key (the upsert's conflict target and the copy's order).
    key: &'static [&'static str],
    /// The key column whose values a counter draws (`AUTOINCREMENT`, identity).
    counter: Option<&'static str>,
}

const fn table(name: &'static str, key: &'static [&'static str]) -> Table {
    Table {
        name,
        key,
        counter: None,
    }
}

/// A table whose single-column key a counter draws.
const fn counted(name: &'static str, key: &'static [&'static str]) -> Table {
    Table {
        name,
        key,
        counter: Some(key[0]),
    }
}

/// Tables left out of a copy: `dataset_changes` is the log of what changed
/// since a dataset version, numbered by the database that holds it; the copied
/// versions are marked so that the target's next build reads everything.
const NOT_COPIED: &[&str] = &["dataset_changes"];

/// Every table of the schema. `copy_covers_the_whole_schema` fails when a
/// migration adds a table that is neither here nor in `NOT_COPIED`.
const TABLES: &[Table] = &[
    table("shop_orders", &["order_id"]),
    table("shop_order_items", &["order_id", "line_no"]),
    table("shop_base_products", &["id"]),
    table("shop_end_products", &["id"]),
    table("shop_images", &["id"]),
    table("shop_accounts", &["id"]),
    table("shop_categories", &["id"]),
    counted("behavior_events", &["seq"]),
    counted("training_interactions", &["id"]),
    table("state", &["key"]),
    table("webhook_deliveries", &["delivery_id"]),
    counted("identity_links", &["linked_seq"]),
    table("forgotten_users", &["user_id"]),
    table("dataset_versions", &["version"]),
    counted("quality_reports", &["id"]),
    counted("model_versions", &["seq"]),
    table("recommendation_log", &["request_id"]),
    counted("experiments", &["id"]),
    table("catalog_rules", &["item_id"]),
    counted("job_runs", &["id"]),
];

/// What the copy did to one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableCopy {
    /// The table.
    pub table: String,
    /// Rows in the source's snapshot.
    pub source_rows: i64,
    /// Rows written (inserted or rewritten) in the target.
    pub written: u64,
    /// Rows in the target afterwards (equal to `source_rows`, or the copy fails).
    pub target_rows: i64,
}

/// What [`Store::copy_to`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    /// The schema version both stores hold.
    pub schema_version: i64,
    /// One entry per table, in copy order.
    pub tables: Vec<TableCopy>,
}

impl CopyReport {
    /// Rows in the source, all tables together.
    pub fn source_rows(&self) -> i64 {
        self.tables.iter().map(|t| t.source_rows).sum()
    }
}

impl Store {
    /// Row counts of every table of the schema, by name.
    pub fn row_counts(&self) -> Result<std::collections::BTreeMap<String, i64>> {
        TABLES
            .iter()
            .map(|t| Ok((t.name.to_string(), count(&self.conn, t.name)?)))
            .collect()
    }

    /// Copies every row of this store into `target` (see the module's text),
    /// calling `progress(table, rows_done, rows_in_table)` as it goes.
    ///
    /// Fails with [`Error::Conflict`] when the two stores hold different
    /// schema versions (open both with this build first: opening migrates),
    /// or when the target ends with rows the source lacks.
    pub fn copy_to(
        &self,
        target: &Store,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<CopyReport> {
        let version = self.database_version()?;
        let target_version = target.database_version()?;
        if version != target_version {
            return Err(Error::Conflict(format!(
                "the source holds schema version {version} and the target {target_version}: \
                 open both with the same manirec build first"
            )));
        }
        let expected: BTreeSet<&str> = TABLES.iter().map(|t| t.name).collect();
        for (which, conn) in [("source", &self.conn), ("target", &target.conn)] {
            let found = table_names(conn)?;
            let found: BTreeSet<&str> = found
                .iter()
                .map(String::as_str)
                .filter(|t| !NOT_COPIED.contains(t))
                .collect();
            if found != expected {
                let extra: Vec<_> = found.difference(&expected).collect();
                let missing: Vec<_> = expected.difference(&found).collect();
                return Err(Error::Conflict(format!(
                    "the {which}'s tables differ from this build's schema \
                     (unknown: {extra:?}, missing: {missing:?})"
                )));
            }
        }

        // One snapshot of the source for the whole copy: a shop that keeps
        // taking events while it is copied is copied as of one instant (run
        // the copy again to bring the rest).
        let snapshot = self.conn.snapshot()?;
        let mut tables = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let copied = copy_table(&snapshot, &target.conn, table, progress)?;
            if copied.source_rows != copied.target_rows {
                return Err(Error::Conflict(format!(
                    "table {}: the source holds {} rows and the target {} after the copy: \
                     the target held rows the source lacks (another shop's?); copy into an \
                     empty database",
                    table.name, copied.source_rows, copied.target_rows
                )));
            }
            tables.push(copied);
        }
        drop(snapshot);
        // The target's change log is its own (see `NOT_COPIED`): the source's
        // watermarks mean nothing there. Its first build reads everything, and
        // its prune mark is its own log's (the row stays, so counts match).
        let tx = target.conn.transaction()?;
        tx.execute("UPDATE dataset_versions SET max_change_seq = -1", params![])?;
        tx.execute(
            "UPDATE state SET value = (SELECT CAST(COALESCE(MAX(seq), 0) AS TEXT)
                                         FROM dataset_changes)
             WHERE key = ?1",
            params![crate::datasets::CHANGES_PRUNED_KEY],
        )?;
        tx.commit()?;
        Ok(CopyReport {
            schema_version: version,
            tables,
        })
    }
}

fn copy_table(
    source: &Conn,
    target: &Conn,
    table: &Table,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<TableCopy> {
    let name = table.name;
    let columns = column_names(target, name)?;
    let source_columns: BTreeSet<String> = column_names(source, name)?.into_iter().collect();
    if source_columns != columns.iter().cloned().collect() {
        return Err(Error::Conflict(format!(
            "table {name} has different columns in the source and the target"
        )));
    }
    let source_rows = count(source, name)?;
    let total = u64::try_from(source_rows).unwrap_or(0);
    let insert = Upsert::new(table, &columns);
    let select = format!(
        "SELECT {} FROM {name} ORDER BY {}",
        columns.join(", "),
        table.key.join(", ")
    );

    let mut batch: Vec<Vec<OwnedValue>> = Vec::with_capacity(insert.rows_per_batch);
    let mut written = 0u64;
    progress(name, 0, total);
    source.query_each(&select, params![], |row| {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            values.push(row.owned(i)?);
        }
        batch.push(values);
        if batch.len() == insert.rows_per_batch {
            written += insert.write(target, &batch)?;
            batch.clear();
            progress(name, written, total);
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        written += insert.write(target, &batch)?;
        progress(name, written, total);
    }
    if let Some(column) = table.counter {
        let high = counter_high_water(source, name, column)?;
        raise_counter(target, name, column, high)?;
    }
    Ok(TableCopy {
        table: name.to_string(),
        source_rows,
        written,
        target_rows: count(target, name)?,
    })
}

/// A multi-row `INSERT … ON CONFLICT (key) DO UPDATE` for one table.
struct Upsert {
    head: String,
    tail: String,
    columns: usize,
    rows_per_batch: usize,
}

impl Upsert {
    fn new(table: &Table, columns: &[String]) -> Self {
        let rest: Vec<String> = columns
            .iter()
            .filter(|c| !table.key.contains(&c.as_str()))
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let action = if rest.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", rest.join(", "))
        };
        Upsert {
            head: format!(
                "INSERT INTO {} ({}) VALUES ",
                table.name,
                columns.join(", ")
            ),
            tail: format!(" ON CONFLICT ({}) {action}", table.key.join(", ")),
            columns: columns.len(),
            // Well under both engines' limits on parameters per statement
            // (SQLite 32 766, PostgreSQL 65 535).
            rows_per_batch: (20_000 / columns.len().max(1)).clamp(1, 1_000),
        }
    }

    /// Writes `rows` in one transaction; the number of rows written.
    fn write(&self, target: &Conn, rows: &[Vec<OwnedValue>]) -> Result<u64> {
        let mut sql = self.head.clone();
        let mut n = 0usize;
        for (r, _) in rows.iter().enumerate() {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for c in 0..self.columns {
                n += 1;
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push('?');
                sql.push_str(&n.to_string());
            }
            sql.push(')');
        }
        sql.push_str(&self.tail);
        let params: Vec<&dyn ToParam> = rows
            .iter()
            .flat_map(|row| row.iter().map(|v| v as &dyn ToParam))
            .collect();
        let tx = target.transaction()?;
        tx.execute(&sql, &params)?;
        tx.commit()?;
        Ok(rows.len() as u64)
    }
}

fn count(conn: &Conn, table: &str) -> Result<i64> {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), params![], |r| {
        r.get(0)
    })
}

fn table_names(conn: &Conn) -> Result<Vec<String>> {
    let sql = match conn.dialect() {
        Dialect::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        }
        Dialect::Postgres => {
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
             AND table_name <> 'manirec_schema'"
        }
    };
    conn.query_map(sql, params![], |r| r.get(0))
}

fn column_names(conn: &Conn, table: &str) -> Result<Vec<String>> {
    let sql = match conn.dialect() {
        Dialect::Sqlite => "SELECT name FROM pragma_table_info(?1) ORDER BY cid",
        Dialect::Postgres => {
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = ?1 ORDER BY ordinal_position"
        }
    };
    conn.query_map(sql, params![table], |r| r.get(0))
}

/// The highest id the table's counter ever drew (deleted rows included:
/// retention deletes old rows, their ids stay spent).
fn counter_high_water(conn: &Conn, table: &str, column: &str) -> Result<i64> {
    let max: Option<i64> = conn.query_row(
        &format!("SELECT MAX({column}) FROM {table}"),
        params![],
        |r| r.get(0),
    )?;
    let drawn: Option<i64> = match conn.dialect() {
        Dialect::Sqlite => conn.query_opt(
            "SELECT seq FROM sqlite_sequence WHERE name = ?1",
            params![table],
            |r| r.get(0),
        )?,
        Dialect::Postgres => {
            let sequence: Option<String> = conn.query_row(
                "SELECT pg_get_serial_sequence(?1, ?2)",
                params![table, column],
                |r| r.get(0),
            )?;
            match sequence {
                Some(seq) => conn.query_opt(
                    &format!("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {seq}"),
                    params![],
                    |r| r.get(0),
                )?,
                None => None,
            }
        }
    };
    Ok(max.unwrap_or(0).max(drawn.unwrap_or(0)))
}

/// Makes the target's counter draw above `high` (never lowers it).
fn raise_counter(conn: &Conn, table: &str, column: &str, high: i64) -> Result<()> {
    let high = high.max(counter_high_water(conn, table, column)?);
    if high <= 0 {
        return Ok(());
    }
    let tx = conn.transaction()?;
    match conn.dialect() {
        Dialect::Sqlite => {
            let changed = tx.execute(
                "UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1",
                params![table, high],
            )?;
            if changed == 0 {
                tx.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
                    params![table, high],
                )?;
            }
        }
        Dialect::Postgres => {
            tx.query_row(
                "SELECT setval(pg_get_serial_sequence(?1, ?2), ?3, true)",
                params![table, column, high],
                |_| Ok(()),
            )?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::params;
    use crate::testing;
    use crate::{BehaviorEvent, Interaction, InteractionKey, Source};

    #[test]
    fn copy_covers_the_whole_schema() {
        let store = Store::open_in_memory().unwrap();
        let found: BTreeSet<String> = table_names(&store.conn).unwrap().into_iter().collect();
        let listed: BTreeSet<String> = TABLES
            .iter()
            .map(|t| t.name)
            .chain(NOT_COPIED.iter().copied())
            .map(String::from)
            .collect();
        assert_eq!(
            found, listed,
            "store/src/copy.rs TABLES (or NOT_COPIED, with a reason) must list every table"
        );
    }

    #[test]
    fn a_copy_leaves_the_dataset_change_log_and_its_watermarks_behind() {
        let source = Store::open_in_memory().unwrap();
        let mut v = crate::DatasetVersion::reservation(1, 0, 1);
        source.reserve_dataset_version(&v).unwrap();
        v.max_change_seq = 5;
        source.publish_dataset_version(&v).unwrap();
        source.prune_dataset_changes(5).unwrap();
        let target = Store::open_in_memory().unwrap();
        source.copy_to(&target, &mut |_, _, _| {}).unwrap();
        // The target numbers its own changes from 1: the source's watermarks
        // would hide them, so its next build reads everything, and its prune
        // mark is its own.
        let copied = target.dataset_version("v1.0").unwrap().unwrap();
        assert_eq!(copied.max_change_seq, -1);
        assert_eq!(
            target
                .state_get("dataset_changes_pruned_through")
                .unwrap()
                .as_deref(),
            Some("0")
        );
    }

    fn interaction(user: &str, ts: i64, rating: f64) -> Interaction {
        Interaction {
            key: InteractionKey {
                user_id: user.into(),
                item_id: format!("p{ts}"),
                timestamp: ts,
                interaction_type: "view".into(),
            },
            rating,
            source: Source::Realtime,
            synthetic: false,
            quantity: 1,
            origin: None,
        }
    }

    fn event(id: &str, ts_ms: i64) -> BehaviorEvent {
        BehaviorEvent {
            event_id: id.into(),
            event_type: "product_view".into(),
            product_id: "p1".into(),
            user_id: None,
            session_id: Some("s1".into()),
            device_id: None,
            timestamp_ms: ts_ms,
            request_id: None,
            properties: Some(r#"{"note":"é ü"}"#.into()),
        }
    }

    /// A small shop: interactions (some deleted, so the counter ran past the
    /// rows that remain), events, state.
    fn shop(store: &mut Store) {
        let rows: Vec<_> = (1..=30)
            .map(|t| interaction(&format!("u{}", t % 4), t, 0.5 + t as f64 / 8.0))
            .collect();
        store.insert_interactions(&rows).unwrap();
        store.delete_older_than(6).unwrap(); // ids 1..=5 are gone, 5 stays spent
        let events: Vec<_> = (1..=7).map(|i| event(&format!("e{i}"), i * 1000)).collect();
        store.insert_events(&events).unwrap();
        store.state_set("export_watermark", "17").unwrap();
    }

    fn dump(store: &Store, table: &str, key: &str) -> Vec<Vec<OwnedValue>> {
        let columns = column_names(&store.conn, table).unwrap();
        let mut columns = columns;
        columns.sort();
        store
            .conn
            .query_map(
                &format!("SELECT {} FROM {table} ORDER BY {key}", columns.join(", ")),
                params![],
                |r| (0..columns.len()).map(|i| r.owned(i)).collect(),
            )
            .unwrap()
    }

    fn copies_and_stays_idempotent(target: Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut source = Store::open(&dir.path().join("source.db")).unwrap();
        shop(&mut source);

        let mut seen = Vec::new();
        let report = source
            .copy_to(&target, &mut |t, done, total| {
                seen.push((t.to_string(), done, total))
            })
            .unwrap();
        let interactions = report
            .tables
            .iter()
            .find(|t| t.table == "training_interactions")
            .unwrap();
        assert_eq!(
            (interactions.source_rows, interactions.target_rows),
            (25, 25)
        );
        assert!(seen.contains(&("training_interactions".to_string(), 25, 25)));
        for (table, key) in [
            ("training_interactions", "id"),
            ("behavior_events", "seq"),
            ("state", "key"),
        ] {
            assert_eq!(
                dump(&source, table, key),
                dump(&target, table, key),
                "{table}"
            );
        }

        // Again: nothing doubles; what changed since is brought over.
        source.state_set("export_watermark", "29").unwrap();
        source
            .insert_interactions(&[interaction("u9", 99, 1.0)])
            .unwrap();
        let again = source.copy_to(&target, &mut |_, _, _| {}).unwrap();
        assert_eq!(again.source_rows(), report.source_rows() + 1);
        assert_eq!(dump(&source, "state", "key"), dump(&target, "state", "key"));
        assert_eq!(
            target.table_counts().unwrap(),
            source.table_counts().unwrap()
        );

        // The target's counter continues past the source's: no id is reused.
        let mut target = target;
        target
            .insert_interactions(&[interaction("u8", 100, 1.0)])
            .unwrap();
        let newest: i64 = target
            .conn
            .query_row(
                "SELECT id FROM training_interactions WHERE user_id = 'u8'",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(newest, 32);
    }

    #[test]
    fn sqlite_copies_into_postgres() {
        let db = testing::postgres();
        copies_and_stays_idempotent(Store::connect(db.url()).unwrap());
    }

    #[test]
    fn sqlite_copies_into_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        copies_and_stays_idempotent(Store::open(&dir.path().join("target.db")).unwrap());
    }

    #[test]
    fn a_target_holding_another_shop_fails_the_count_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = Store::open(&dir.path().join("source.db")).unwrap();
        shop(&mut source);
        let db = testing::postgres();
        let mut target = Store::connect(db.url()).unwrap();
        target
            .insert_interactions(&[interaction("someone else", 1_000, 1.0)])
            .unwrap();
        let err = source.copy_to(&target, &mut |_, _, _| {}).unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.contains("training_interactions")),
            "{err}"
        );
    }
}
