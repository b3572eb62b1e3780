//! D1 SQL dumps (`wrangler d1 export` output: `CREATE TABLE` + `INSERT` statements).
//!
//! A dump is replayed statement by statement into an in-memory SQLite database,
//! which is then read exactly like a shop file. Statements are delimited with
//! SQLite's own `sqlite3_complete`, so quotes, comments and trigger bodies are
//! handled as SQLite handles them; a statement that fails is reported with its
//! line and skipped, and the rest of the dump still loads.

use std::ffi::CString;

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
/// in the returned [`Problems`] under their line number.
pub fn load(dump: &str) -> rusqlite::Result<(Connection, Problems)> {
    let conn = Connection::open_in_memory()?;
    let mut problems = Problems::default();
    for stmt in statements(dump) {
        if !is_complete(stmt.sql) {
            problems.add(
                format!("line {}", stmt.line),
                "incomplete statement at the end of the dump (truncated file?)",
            );
            continue;
        }
        // Transaction control in a dump would fight our own; D1 exports none that matter.
        let head = stmt.sql.get(..16).unwrap_or(stmt.sql).to_ascii_uppercase();
        if head.starts_with("BEGIN") || head.starts_with("COMMIT") || head.starts_with("ROLLBACK") {
            continue;
        }
        if let Err(e) = conn.execute_batch(stmt.sql) {
            problems.add(
                format!("line {}", stmt.line),
                format!("statement failed: {e}"),
            );
        }
    }
    Ok((conn, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

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
