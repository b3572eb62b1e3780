use std::path::Path;

use chrono::DateTime;
use rusqlite::{params, Connection};

use crate::Shop;

/// The shop's own schema, as its D1 database has it (not manirec's).
const SHOP_SCHEMA: &str = r#"
CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT, role TEXT, created_at TEXT, country TEXT);
CREATE TABLE categories (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE base_products (id INTEGER PRIMARY KEY, title TEXT, category_id INTEGER, price REAL, created_at TEXT);
CREATE TABLE end_products (id TEXT PRIMARY KEY, base_product_id INTEGER, designer_id INTEGER, title TEXT, status TEXT, created_at TEXT);
CREATE TABLE images (id INTEGER PRIMARY KEY, type TEXT, entity_id TEXT, url TEXT, view_count INTEGER DEFAULT 0, created_at TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, shoplazza_id TEXT UNIQUE, email TEXT, financial_status TEXT, line_items TEXT, total_price REAL, currency TEXT, created_at TEXT);
"#;

fn sqlite_time(t: i64) -> String {
    DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

impl Shop {
    /// Writes the shop as a SQLite file at `path` (replacing any file there).
    pub fn write_sqlite(&self, path: &Path) -> rusqlite::Result<()> {
        let _ = std::fs::remove_file(path);
        let mut conn = Connection::open(path)?;
        conn.execute_batch(SHOP_SCHEMA)?;
        let tx = conn.transaction()?;
        {
            let mut s = tx.prepare("INSERT INTO accounts VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for a in &self.accounts {
                s.execute(params![
                    a.id,
                    a.email,
                    a.role,
                    sqlite_time(a.created_at),
                    a.country
                ])?;
            }
            let mut s = tx.prepare("INSERT INTO categories VALUES (?1, ?2)")?;
            for (i, c) in self.categories.iter().enumerate() {
                s.execute(params![i as i64 + 1, c])?;
            }
            let mut s = tx.prepare("INSERT INTO base_products VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for b in &self.base_products {
                s.execute(params![
                    b.id,
                    b.title,
                    b.category_id,
                    b.price,
                    sqlite_time(self.spec.now - 400 * 86_400)
                ])?;
            }
            let mut s =
                tx.prepare("INSERT INTO end_products VALUES (?1, ?2, ?3, ?4, 'published', ?5)")?;
            for e in &self.end_products {
                s.execute(params![
                    e.id,
                    e.base_product_id,
                    e.designer_id,
                    e.title,
                    sqlite_time(e.created_at)
                ])?;
            }
            let mut s = tx.prepare("INSERT INTO images VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
            for i in &self.images {
                let url = format!("https://cdn.example/img/{}.png", i.id);
                s.execute(params![
                    i.id,
                    i.kind,
                    i.entity_id,
                    url,
                    i.view_count,
                    sqlite_time(i.created_at)
                ])?;
            }
            let mut s =
                tx.prepare("INSERT INTO orders VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'USD', ?7)")?;
            for o in &self.orders {
                s.execute(params![
                    o.id,
                    o.shoplazza_id,
                    o.email,
                    o.financial_status,
                    o.line_items.to_string(),
                    o.total_price,
                    sqlite_time(o.created_at)
                ])?;
            }
        }
        tx.commit()
    }
}
