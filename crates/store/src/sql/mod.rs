//! The seam between the store's queries and a database engine.
//!
//! Every query of the store goes through [`Conn`]: SQL text with `?N`
//! placeholders, parameters as [`Value`]s, rows read back as [`Value`]s. Two
//! backends sit behind it, each in its own module:
//!
//! - [`sqlite`]: the embedded default (one file, WAL, one writer at a time);
//! - [`postgres`]: for shops past one machine (many `serve` replicas on one
//!   database).
//!
//! Most statements are written once, in the subset both engines read the same
//! way (`ON CONFLICT … DO …`, `RETURNING`, `COALESCE`, `CAST(… AS BIGINT)`); the
//! few that cannot be (JSON functions, locking) pick their text by
//! [`Conn::dialect`], both texts side by side where they are used. Each
//! backend owns its migrations; both share one version history.
//!
//! A transaction is a guard ([`Tx`]): it rolls back when dropped uncommitted,
//! so an early `?` never leaves a half-written batch.

pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::ops::Deref;

use crate::{Error, Result};

/// The engine behind a connection, for the statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (the embedded default).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// A FROM item `alias(value)`: the text elements of the JSON array held
    /// in the text column `column` (SQLite's `json_each`, PostgreSQL's
    /// `json_array_elements_text`).
    pub(crate) fn json_elements(self, column: &str, alias: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_each({column}) AS {alias}"),
            Dialect::Postgres => {
                format!("json_array_elements_text({column}::json) AS {alias}(value)")
            }
        }
    }

    /// An expression for the ASCII unit separator, to join ids into one key.
    pub(crate) fn unit_separator(self) -> &'static str {
        match self {
            Dialect::Sqlite => "char(31)",
            Dialect::Postgres => "chr(31)",
        }
    }
}

/// One value crossing the seam, in either direction: a parameter bound to a
/// statement or a column read from a row. Text and bytes are borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// An owned [`Value`], for rows assembled before they are bound (the mirror's
/// generic upsert).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OwnedValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl ToParam for OwnedValue {
    fn param(&self) -> Value<'_> {
        match self {
            OwnedValue::Null => Value::Null,
            OwnedValue::Int(i) => Value::Int(*i),
            OwnedValue::Real(r) => Value::Real(*r),
            OwnedValue::Text(s) => Value::Text(s),
            OwnedValue::Blob(b) => Value::Blob(b),
        }
    }
}

/// Something that can be bound as a statement parameter.
pub(crate) trait ToParam {
    fn param(&self) -> Value<'_>;
}

/// Something that can be read from a column.
pub(crate) trait FromValue: Sized {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String>;
}

/// Parameters for a statement: `params![a, b, c]`.
macro_rules! params {
    () => { &[] as &[&dyn $crate::sql::ToParam] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::sql::ToParam),+] as &[&dyn $crate::sql::ToParam] };
}
pub(crate) use params;

/// A connection to either engine.
pub(crate) enum Conn {
    Sqlite(sqlite::Sqlite),
    Postgres(Box<postgres::Postgres>),
}

/// One row of a result, read by column index.
pub(crate) enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r ::postgres::Row),
}

impl Row<'_> {
    /// Column `idx` (0-based) as `T`.
    pub fn get<T: FromValue>(&self, idx: usize) -> Result<T> {
        let value = match self {
            Row::Sqlite(row) => sqlite::value(row, idx)?,
            Row::Postgres(row) => postgres::value(row, idx)?,
        };
        T::from_value(value).map_err(|reason| Error::Decode {
            column: idx,
            reason,
        })
    }

    /// How many columns the row has.
    pub fn len(&self) -> usize {
        match self {
            Row::Sqlite(row) => row.as_ref().column_count(),
            Row::Postgres(row) => row.len(),
        }
    }

    /// Column `idx` as whatever it holds, copied out of the row.
    pub fn owned(&self, idx: usize) -> Result<OwnedValue> {
        let value = match self {
            Row::Sqlite(row) => sqlite::value(row, idx)?,
            Row::Postgres(row) => postgres::value(row, idx)?,
        };
        Ok(match value {
            Value::Null => OwnedValue::Null,
            Value::Int(i) => OwnedValue::Int(i),
            Value::Real(r) => OwnedValue::Real(r),
            Value::Text(s) => OwnedValue::Text(s.to_owned()),
            Value::Blob(b) => OwnedValue::Blob(b.to_vec()),
        })
    }

    /// Column `idx` as text borrowed from the row (large scans: no copy).
    pub fn text(&self, idx: usize) -> Result<&str> {
        let value = match self {
            Row::Sqlite(row) => sqlite::value(row, idx)?,
            Row::Postgres(row) => postgres::value(row, idx)?,
        };
        match value {
            Value::Text(s) => Ok(s),
            v => Err(Error::Decode {
                column: idx,
                reason: wrong("text", v),
            }),
        }
    }
}

impl Conn {
    /// Which engine this is.
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize> {
        match self {
            Conn::Sqlite(c) => c.execute(sql, params),
            Conn::Postgres(c) => c.execute(sql, params),
        }
    }

    /// Calls `f` on every row, in order, without collecting them (large scans).
    pub fn query_each(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        mut f: impl FnMut(&Row) -> Result<()>,
    ) -> Result<()> {
        match self {
            Conn::Sqlite(c) => c.query_each(sql, params, &mut f),
            Conn::Postgres(c) => c.query_each(sql, params, &mut f),
        }
    }

    /// Every row, mapped by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        mut f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.query_each(sql, params, |row| {
            out.push(f(row)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row mapped by `f`, or `None` when there is none.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut f = Some(f);
        let mut out = None;
        self.query_each(sql, params, |row| {
            if let Some(f) = f.take() {
                out = Some(f(row)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row mapped by `f`; [`Error::NotFound`] when there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        self.query_opt(sql, params, f)?.ok_or(Error::NotFound)
    }

    /// A read-write transaction. Writers of SQLite take the file's lock at
    /// their first write; PostgreSQL's run beside each other row by row.
    pub fn transaction(&self) -> Result<Tx<'_>> {
        self.begin(Begin::Write)
    }

    /// A transaction that reads then writes what it read (next version
    /// number, a lease): it waits for every other such transaction, on
    /// SQLite by taking the write lock at once, on PostgreSQL by a
    /// transaction-scoped advisory lock, so two replicas never both read
    /// the same "next".
    pub fn transaction_exclusive(&self) -> Result<Tx<'_>> {
        self.begin(Begin::Exclusive)
    }

    /// Statements SQLite compiled again since the connection opened (0 for
    /// PostgreSQL, which does not re-plan a statement on binding).
    #[cfg(test)]
    pub fn statements_reprepared(&self) -> u64 {
        match self {
            Conn::Sqlite(c) => c.reprepared(),
            Conn::Postgres(_) => 0,
        }
    }

    /// Whether SQLite reads the file through a memory map (a bulk read: a page
    /// costs a memory access, not a system call). Serving's readers never map
    /// (see `sqlite::Sqlite::reader`); PostgreSQL ignores it.
    pub fn map_file(&self, on: bool) -> Result<()> {
        match self {
            Conn::Sqlite(c) => c.batch(if on {
                "PRAGMA mmap_size = 2147418112"
            } else {
                "PRAGMA mmap_size = 0"
            }),
            Conn::Postgres(_) => Ok(()),
        }
    }

    /// A read-only transaction: every query inside it sees one snapshot.
    pub fn snapshot(&self) -> Result<Tx<'_>> {
        self.begin(Begin::Snapshot)
    }

    /// Begins a read-only transaction on each of `readers` (other connections
    /// to this database), all of them seeing one instant: SQLite starts them
    /// while this connection holds the write lock, for the moment that takes,
    /// so no commit can come between them; PostgreSQL has them import this
    /// connection's exported snapshot. End each with [`Conn::end_reading`].
    /// [`Error::Busy`] when SQLite's write lock stays taken for two seconds.
    pub(crate) fn begin_reading_at_one_instant(&self, readers: &[&Conn]) -> Result<()> {
        let mut begun = 0;
        let started = (|| match self {
            Conn::Sqlite(db) => {
                // A writer in a long transaction (an import) would keep the
                // readers waiting: give up soon instead, and say so (Busy).
                db.set_busy_timeout(std::time::Duration::from_secs(2))?;
                let lock = self.transaction_exclusive();
                db.set_busy_timeout(sqlite::BUSY_TIMEOUT)?;
                let lock = lock?;
                for reader in readers {
                    reader.start(Begin::Snapshot)?;
                    begun += 1;
                    // A read transaction takes its snapshot at its first read.
                    reader.query_row("SELECT COUNT(*) FROM sqlite_schema", &[], |r| {
                        r.get::<i64>(0)
                    })?;
                }
                drop(lock);
                Ok(())
            }
            Conn::Postgres(_) => {
                let exporter = self.snapshot()?;
                let id: String =
                    exporter.query_row("SELECT pg_export_snapshot()", &[], |r| r.get(0))?;
                for reader in readers {
                    reader.start(Begin::Snapshot)?;
                    begun += 1;
                    // The id is the server's own string of hex digits and
                    // dashes; the statement takes no parameter.
                    let Conn::Postgres(pg) = reader else {
                        return Err(Error::Invalid("readers of one engine only".into()));
                    };
                    pg.batch(&format!("SET TRANSACTION SNAPSHOT '{id}'"))?;
                }
                exporter.commit()
            }
        })();
        if started.is_err() {
            for reader in &readers[..begun] {
                let _ = reader.end(false);
            }
        }
        started
    }

    /// Ends a read transaction begun by [`Conn::begin_reading_at_one_instant`].
    pub(crate) fn end_reading(&self) -> Result<()> {
        self.end(false)
    }

    fn begin(&self, kind: Begin) -> Result<Tx<'_>> {
        self.start(kind)?;
        Ok(Tx {
            conn: self,
            open: true,
        })
    }

    /// Begins a transaction that the caller ends (see [`Conn::end`]).
    fn start(&self, kind: Begin) -> Result<()> {
        match self {
            Conn::Sqlite(c) => c.begin(kind),
            Conn::Postgres(c) => c.begin(kind),
        }
    }

    /// Whether a transaction is open (what the next statement joins).
    #[cfg(test)]
    fn in_transaction(&self) -> bool {
        match self {
            Conn::Sqlite(c) => c.in_transaction(),
            Conn::Postgres(c) => c.in_transaction(),
        }
    }

    fn end(&self, commit: bool) -> Result<()> {
        match self {
            Conn::Sqlite(c) => c.end(commit),
            Conn::Postgres(c) => c.end(commit),
        }
    }
}

/// How a transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    Write,
    Exclusive,
    Snapshot,
}

/// An open transaction on a [`Conn`]. Queries go through it like through the
/// connection (it derefs to it); dropping it uncommitted rolls back.
pub(crate) struct Tx<'c> {
    conn: &'c Conn,
    open: bool,
}

impl Tx<'_> {
    /// Makes every write of the transaction durable.
    pub fn commit(mut self) -> Result<()> {
        self.open = false;
        self.conn.end(true)
    }
}

impl Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.conn.end(false) {
                tracing::warn!(error = %e, "rollback failed");
            }
        }
    }
}

// ---- parameters ----

impl ToParam for i64 {
    fn param(&self) -> Value<'_> {
        Value::Int(*self)
    }
}
impl ToParam for i32 {
    fn param(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl ToParam for u32 {
    fn param(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl ToParam for u64 {
    fn param(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToParam for usize {
    fn param(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToParam for f64 {
    fn param(&self) -> Value<'_> {
        Value::Real(*self)
    }
}
impl ToParam for f32 {
    fn param(&self) -> Value<'_> {
        Value::Real(f64::from(*self))
    }
}
impl ToParam for bool {
    fn param(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl ToParam for str {
    fn param(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToParam for String {
    fn param(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToParam for [u8] {
    fn param(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl ToParam for Vec<u8> {
    fn param(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl<T: ToParam + ?Sized> ToParam for &T {
    fn param(&self) -> Value<'_> {
        (**self).param()
    }
}
impl<T: ToParam> ToParam for Option<T> {
    fn param(&self) -> Value<'_> {
        match self {
            Some(v) => v.param(),
            None => Value::Null,
        }
    }
}

// ---- columns ----

fn wrong(expected: &str, v: Value<'_>) -> String {
    let found = match v {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    };
    format!("expected {expected}, found {found}")
}

impl FromValue for i64 {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Int(i) => Ok(i),
            // PostgreSQL's SUM and AVG of integers are NUMERIC: whole ones come back exact.
            Value::Real(r) if r.fract() == 0.0 && r.abs() < 9.0e15 => Ok(r as i64),
            v => Err(wrong("an integer", v)),
        }
    }
}
impl FromValue for i32 {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        let i = i64::from_value(v)?;
        i32::try_from(i).map_err(|_| format!("{i} does not fit 32 bits"))
    }
}
impl FromValue for u8 {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        let i = i64::from_value(v)?;
        u8::try_from(i).map_err(|_| format!("{i} does not fit 8 bits"))
    }
}
impl FromValue for u32 {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        let i = i64::from_value(v)?;
        u32::try_from(i).map_err(|_| format!("{i} is not a 32-bit count"))
    }
}
impl FromValue for u64 {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        let i = i64::from_value(v)?;
        u64::try_from(i).map_err(|_| format!("{i} is negative"))
    }
}
impl FromValue for usize {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        let i = i64::from_value(v)?;
        usize::try_from(i).map_err(|_| format!("{i} is negative"))
    }
}
impl FromValue for f64 {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Real(r) => Ok(r),
            Value::Int(i) => Ok(i as f64),
            v => Err(wrong("a number", v)),
        }
    }
}
impl FromValue for f32 {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        f64::from_value(v).map(|r| r as f32)
    }
}
impl FromValue for bool {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Int(i) => Ok(i != 0),
            v => Err(wrong("a boolean", v)),
        }
    }
}
impl FromValue for String {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.to_owned()),
            v => Err(wrong("text", v)),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.to_vec()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            v => Err(wrong("bytes", v)),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// `items` cut into chunks whose lengths all come from `sizes` (largest
/// first, the last one 1): statements built per chunk then come in
/// `sizes.len()` shapes, which the engines' statement caches keep, instead of
/// one shape per length.
pub(crate) fn fixed_chunks<'a, T>(
    items: &'a [T],
    sizes: &'static [usize],
) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = sizes
            .iter()
            .copied()
            .find(|&s| s <= rest.len())
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// `?N` and `?` placeholders as PostgreSQL's `$N`; quoted text is left alone.
pub(crate) fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut next = 0u32;
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    next += 1;
                    out.push_str(&next.to_string());
                } else {
                    out.push_str(&digits);
                }
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_take_their_lengths_from_the_fixed_sizes_and_cover_everything() {
        let items: Vec<u32> = (0..263).collect();
        let lengths: Vec<usize> = fixed_chunks(&items, &[200, 50, 10, 1])
            .map(<[u32]>::len)
            .collect();
        assert_eq!(lengths, [200, 50, 10, 1, 1, 1]);
        let joined: Vec<u32> = fixed_chunks(&items, &[200, 50, 10, 1])
            .flatten()
            .copied()
            .collect();
        assert_eq!(joined, items);
        assert_eq!(fixed_chunks(&items[..0], &[200, 1]).count(), 0);
    }

    #[test]
    fn a_committed_or_dropped_transaction_leaves_the_connection_outside_one() {
        let pg = crate::testing::postgres();
        for store in [
            crate::Store::open_in_memory().unwrap(),
            crate::Store::connect(pg.url()).unwrap(),
        ] {
            let conn = &store.conn;
            let tx = conn.transaction().unwrap();
            tx.execute("DELETE FROM state", params![]).unwrap();
            assert!(conn.in_transaction());
            tx.commit().unwrap();
            assert!(!conn.in_transaction(), "{:?}", conn.dialect());
            drop(conn.snapshot().unwrap());
            assert!(!conn.in_transaction(), "{:?}", conn.dialect());
            // A lone statement is its own transaction (on PostgreSQL, with the writers' lock).
            conn.execute("DELETE FROM state", params![]).unwrap();
            assert!(!conn.in_transaction(), "{:?}", conn.dialect());
        }
    }

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            numbered_placeholders("SELECT ?1, ?, 'a?b', \"c?\" WHERE x = ?12 AND y = ?"),
            "SELECT $1, $1, 'a?b', \"c?\" WHERE x = $12 AND y = $2"
        );
    }
}
