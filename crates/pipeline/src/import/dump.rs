//! D1 SQL dumps (`wrangler d1 export` output: `CREATE TABLE` + `INSERT` statements).
//!
//! A dump is replayed statement by statement into an in-memory SQLite database,
//! which is then read exactly like a shop file. Statements are delimited with
//! SQLite's own `sqlite3_complete`, so quotes, comments and trigger bodies are
//! handled as SQLite handles them; a statement that fails is reported with its
//! line and skipped, and the rest of the dump still loads.

use std::ffi::CString;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;

use crate::report::Problems;

/// One complete statement of a dump, with the line it starts on.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement<'a> {
    /// 1-based line of its first character.
    pub line: usize,
    /// The SQL text, without surrounding whitespace.
    pub sql: &'a str,
}

fn is_complete(sql: &str) -> bool {
    let Ok(c) = CString::new(sql) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) != 0 }
}

/// Splits a dump into complete statements. Text after the last complete
/// statement (a truncated dump) comes back as a final, incomplete statement so
/// that it is reported rather than silently dropped.
pub fn statements(dump: &str) -> Vec<Statement<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in dump.match_indices(';') {
        let candidate = &dump[start..=i];
        if is_complete(candidate) {
            push(&mut out, dump, start, candidate);
            start = i + 1;
        }
    }
    let rest = &dump[start..];
    push(&mut out, dump, start, rest);
    out
}

fn push<'a>(out: &mut Vec<Statement<'a>>, dump: &'a str, start: usize, text: &'a str) {
    let leading = leading_trivia(text);
    let sql = text[leading..].trim_end();
    if sql.is_empty() || sql == ";" {
        return;
    }
    let line = dump[..start + leading].matches('\n').count() + 1;
    out.push(Statement { line, sql });
}

/// Length of the whitespace and comments before a statement, so that its line
/// number is that of its first keyword.
fn leading_trivia(text: &str) -> usize {
    let mut i = 0;
    loop {
        let rest = &text[i..];
        let trimmed = rest.trim_start();
        i += rest.len() - trimmed.len();
        if trimmed.starts_with("--") {
            i += trimmed.find('\n').map_or(trimmed.len(), |n| n + 1);
        } else if let Some(body) = trimmed.strip_prefix("/*") {
            i += body.find("*/").map_or(trimmed.len(), |n| n + 4);
        } else {
            return i;
        }
    }
}

/// Replays `dump` into a fresh in-memory database. Failed statements are recorded
/// in the returned [`Problems`] under their line number. A dump only creates
/// tables and indexes and inserts rows: any other statement (ATTACH, VACUUM
/// INTO a file, a trigger, an UPDATE, …) is refused, first by its keyword and
/// then by SQLite's authorizer, so a dump cannot reach past its scratch database.
pub fn load(dump: &str) -> rusqlite::Result<(Connection, Problems)> {
    load_within(dump, STATEMENT_BUDGET)
}

/// How long one statement of a dump may run: a shop's rows insert in
/// microseconds; a statement that runs this long is not a shop's.
const STATEMENT_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest text or blob a dump may write (a shop's longest value is a few
/// KB of JSON); SQLite's own default is 1 GB.
const MAX_VALUE_BYTES: i32 = 16 << 20;

fn load_within(
    dump: &str,
    budget: std::time::Duration,
) -> rusqlite::Result<(Connection, Problems)> {
    let conn = Connection::open_in_memory()?;
    conn.authorizer(Some(authorize));
    conn.set_limit(
        rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH,
        MAX_VALUE_BYTES,
    )?;
    // Each statement's start, read by the progress handler, which interrupts
    // one past its budget.
    let started = std::sync::Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let watched = started.clone();
    conn.progress_handler(
        10_000,
        Some(move || {
            watched
                .lock()
                .map(|at| at.elapsed() > budget)
                .unwrap_or(true)
        }),
    );
    let mut problems = Problems::default();
    for stmt in statements(dump) {
        if !is_complete(stmt.sql) {
            problems.add(
                format!("line {}", stmt.line),
                "incomplete statement at the end of the dump (truncated file?)",
            );
            continue;
        }
        let head = first_word(stmt.sql).to_ascii_uppercase();
        // Transaction control in a dump would fight our own; D1 exports none that matter.
        if matches!(head.as_str(), "BEGIN" | "COMMIT" | "END" | "ROLLBACK") {
            continue;
        }
        if !matches!(
            head.as_str(),
            "CREATE" | "INSERT" | "REPLACE" | "PRAGMA" | "DELETE"
        ) {
            problems.add(
                format!("line {}", stmt.line),
                format!("{head} statement not replayed: a dump may only create tables and indexes and insert rows"),
            );
            continue;
        }
        if let Ok(mut at) = started.lock() {
            *at = std::time::Instant::now();
        }
        if let Err(e) = conn.execute_batch(stmt.sql) {
            problems.add(
                format!("line {}", stmt.line),
                format!("statement failed: {e}"),
            );
        }
    }
    // The replay is over: what reads the scratch database afterwards is ours.
    conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
    conn.progress_handler(0, None::<fn() -> bool>);
    Ok((conn, problems))
}

/// The first keyword of a statement, past whitespace and comments.
fn first_word(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(line) = rest.strip_prefix("--") {
            rest = line.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(block) = rest.strip_prefix("/*") {
            rest = block.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

/// What a statement of a dump may do, as SQLite asks while preparing it.
fn authorize(ctx: AuthContext<'_>) -> Authorization {
    match ctx.action {
        AuthAction::CreateTable { .. }
        | AuthAction::CreateIndex { .. }
        | AuthAction::Insert { .. }
        | AuthAction::Read { .. }
        | AuthAction::Select
        | AuthAction::Function { .. } => Authorization::Allow,
        // CREATE TABLE records the table in the schema (a statement cannot
        // itself: writable_schema is refused below).
        AuthAction::Update {
            table_name: "sqlite_master" | "sqlite_schema",
            ..
        } => Authorization::Allow,
        // D1 exports reset AUTOINCREMENT counters before restoring them.
        AuthAction::Delete {
            table_name: "sqlite_sequence",
        } => Authorization::Allow,
        AuthAction::Pragma { pragma_name, .. }
            if pragma_name.eq_ignore_ascii_case("defer_foreign_keys")
                || pragma_name.eq_ignore_ascii_case("foreign_keys") =>
        {
            Authorization::Allow
        }
        _ => Authorization::Deny,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_cannot_run_forever_nor_fill_memory() {
        // 20 rows, then a join of seven copies: 1.28e9 rows to insert.
        let mut dump = String::from("CREATE TABLE t (a);\n");
        for i in 0..20 {
            dump.push_str(&format!("INSERT INTO t VALUES ({i});\n"));
        }
        dump.push_str(
            "INSERT INTO t SELECT 1 FROM t a, t b, t c, t d, t e, t f, t g;\n\
             INSERT INTO t VALUES (zeroblob(100000000));\n\
             INSERT INTO t VALUES ('kept');",
        );
        let started = std::time::Instant::now();
        let (conn, problems) = load_within(&dump, std::time::Duration::from_millis(200)).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(problems.count, 2, "{problems:?}");
        let reasons: Vec<&String> = problems.reasons.keys().collect();
        assert!(
            reasons.iter().any(|r| r.contains("interrupted")),
            "{reasons:?}"
        );
        assert!(reasons.iter().any(|r| r.contains("too big")), "{reasons:?}");
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 21);
    }

    #[test]
    fn a_dump_cannot_reach_past_its_scratch_database() {
        let dir = tempfile::tempdir().unwrap();
        let attached = dir.path().join("attached.db");
        let vacuumed = dir.path().join("vacuumed.db");
        let dump = format!(
            "PRAGMA defer_foreign_keys=TRUE;\n\
             CREATE TABLE t (a TEXT);\n\
             INSERT INTO t VALUES('kept');\n\
             ATTACH DATABASE '{}' AS evil;\n\
             VACUUM INTO '{}';\n\
             /* hidden */ -- and hidden again\n attach '{}' as evil2;\n\
             CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END;\n\
             CREATE VIEW v AS SELECT a FROM t;\n\
             UPDATE t SET a = 'changed';\n\
             DELETE FROM t;\n\
             PRAGMA writable_schema = ON;\n\
             INSERT INTO t VALUES('also kept');",
            attached.display(),
            vacuumed.display(),
            attached.display()
        );
        let (conn, problems) = load(&dump).unwrap();
        assert!(
            !attached.exists() && !vacuumed.exists(),
            "a file was written"
        );
        let rows: Vec<String> = conn
            .prepare("SELECT a FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows, ["kept", "also kept"]);
        assert_eq!(problems.count, 8, "{problems:?}");
        let objects: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type IN ('trigger', 'view')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(objects, 0);
    }

    #[test]
    fn semicolons_inside_strings_comments_and_triggers_do_not_split() {
        let dump = "PRAGMA defer_foreign_keys=TRUE;\n\
            CREATE TABLE t (a TEXT); -- a comment; with a semicolon\n\
            INSERT INTO \"t\" VALUES('x;y');\n\
            CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = a || ';'; END;\n\
            INSERT INTO t VALUES('it''s; fine');";
        let stmts = statements(dump);
        let sql: Vec<&str> = stmts.iter().map(|s| s.sql).collect();
        assert_eq!(sql.len(), 5, "{sql:#?}");
        assert_eq!(sql[2], "INSERT INTO \"t\" VALUES('x;y');");
        assert!(sql[3].ends_with("END;"));
        assert_eq!(stmts[4].line, 5);
    }

    #[test]
    fn a_bad_statement_is_reported_and_the_rest_loads() {
        let dump = "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT);\n\
            INSERT INTO t VALUES(1, 'one');\n\
            INSERT INTO t VALUES(1, 'duplicate key');\n\
            INSERT INTO nowhere VALUES(2);\n\
            INSERT INTO t VALUES(3, 'three');\n\
            INSERT INTO t VALUES(4, 'trunc";
        let (conn, problems) = load(dump).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(problems.count, 3);
        let rows: Vec<&str> = problems.examples.iter().map(|p| p.row.as_str()).collect();
        assert_eq!(rows, ["line 3", "line 4", "line 6"]);
    }
}
