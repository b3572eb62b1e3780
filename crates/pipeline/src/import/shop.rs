//! The shop's database into the store's shop mirror.
//!
//! Real shops differ from the textbook schema: extra columns, missing optional
//! ones, NULLs, ids stored as numbers or text, broken JSON in `line_items`,
//! statuses nobody documented. Each table is read by column *name* (with the
//! aliases real shops use), extra columns are kept as a JSON `attributes`
//! object, and every row is judged on its own: a sound row is upserted, a broken
//! one is counted under `rejected` with its row number and reason, a usable row
//! with a caveat under `warnings`. Upserts are keyed by the shop's ids, so
//! importing an updated shop updates rows instead of duplicating them.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use manirec_store::{
    Account, BaseProduct, Category, EndProduct, Image, OrderLine, ShopOrder, Store, UpsertCounts,
};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::identity::UserKey;
use crate::import::dump;
use crate::report::{Problems, Rejection};
use crate::time::{parse_timestamp, seconds_from_number};
use crate::{Error, Progress, Result};

/// The tables of a shop, in import order.
pub const SHOP_TABLES: [&str; 5] = [
    "accounts",
    "base_products",
    "end_products",
    "images",
    "orders",
];

/// Financial statuses Shoplazza (and Shopify-like shops) document.
const KNOWN_STATUSES: &[&str] = &[
    "waiting",
    "paying",
    "pending",
    "authorized",
    "partially_paid",
    "paid",
    "cancelled",
    "failed",
    "refunding",
    "refund_failed",
    "refunded",
    "partially_refunded",
    "voided",
    "unpaid",
];

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct ShopImport {
    /// `sqlite` or `d1-dump`.
    pub format: &'static str,
    /// Rows imported per table (new, changed or unchanged).
    pub tables: BTreeMap<String, u64>,
    /// Per table: new, changed and unchanged rows.
    pub changes: BTreeMap<String, UpsertCounts>,
    /// Rows not imported, per table, with reasons.
    pub rejected: BTreeMap<String, Problems>,
    /// Rows imported with a caveat, per table, with reasons.
    pub warnings: BTreeMap<String, Problems>,
    /// Statements of a D1 dump that failed to replay.
    pub dump_errors: Problems,
    /// Shop tables the file does not have.
    pub missing_tables: Vec<String>,
}

/// Imports the shop at `path` (a SQLite file or a D1 SQL dump) into the mirror.
/// Accounts and orders of customers erased on request (`forget`) are left
/// out, reported as rejected: `key` names their emails as `forget` recorded them.
pub fn import_shop(
    store: &mut Store,
    path: &Path,
    key: &UserKey,
    progress: &dyn Progress,
) -> Result<ShopImport> {
    let input_error = |message: String| Error::Input {
        path: path.display().to_string(),
        message,
    };
    let bytes =
        std::fs::read(path).map_err(|e| input_error(format!("cannot read the file: {e}")))?;
    let mut report = ShopImport::default();
    let conn = if bytes.starts_with(b"SQLite format 3\0") {
        report.format = "sqlite";
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| input_error(format!("cannot open the SQLite file: {e}")))?
    } else {
        report.format = "d1-dump";
        let text = String::from_utf8(bytes).map_err(|_| {
            input_error(
                "neither a SQLite database nor a UTF-8 SQL dump; pass the shop's .db/.sqlite file \
                 or the output of `wrangler d1 export`"
                    .into(),
            )
        })?;
        let (conn, problems) =
            dump::load(&text).map_err(|e| input_error(format!("cannot replay the dump: {e}")))?;
        report.dump_errors = problems;
        conn
    };

    let mut reader = ShopReader {
        conn: &conn,
        path,
        report: &mut report,
        progress,
    };
    // Optional (older shops have none): lets a category be asked by name.
    let categories = match reader.find_table("categories")? {
        Some(_) => reader.read("categories", category_from_row)?,
        None => None,
    };
    let mut accounts = reader.read("accounts", account_from_row)?;
    let base = reader.read("base_products", base_product_from_row)?;
    let end = reader.read("end_products", end_product_from_row)?;
    let images = reader.read("images", image_from_row)?;
    let mut orders = reader.read("orders", order_from_row)?;

    if report.missing_tables.len() == SHOP_TABLES.len() {
        return Err(input_error(format!(
            "no shop tables found (expected {}); is this the shop's database?",
            SHOP_TABLES.join(", ")
        )));
    }
    let forgotten = store.forgotten_users()?;
    if !forgotten.is_empty() {
        let erased = |id: Option<&str>, email: Option<&str>| {
            id.is_some_and(|id| forgotten.contains(id))
                || email.is_some_and(|e| forgotten.contains(&key.user_id_for_email(e)))
        };
        leave_out(&mut accounts, "accounts", &mut report, |a| {
            erased(Some(&a.id), a.email.as_deref()).then(|| format!("account {}", a.id))
        });
        leave_out(&mut orders, "orders", &mut report, |o| {
            erased(o.customer_id.as_deref(), o.email.as_deref())
                .then(|| format!("order {}", o.order_id))
        });
    }
    let mut record = |table: &str, counts: UpsertCounts| {
        report.tables.insert(table.to_owned(), counts.total());
        report.changes.insert(table.to_owned(), counts);
    };
    if let Some(rows) = categories {
        record("categories", store.upsert_categories(&rows)?);
    }
    if let Some(rows) = accounts {
        record("accounts", store.upsert_accounts(&rows)?);
    }
    if let Some(rows) = base {
        record("base_products", store.upsert_base_products(&rows)?);
    }
    if let Some(rows) = end {
        record("end_products", store.upsert_end_products(&rows)?);
    }
    if let Some(rows) = images {
        record("images", store.upsert_images(&rows)?);
    }
    if let Some(rows) = orders {
        record("orders", store.upsert_orders(&rows)?);
    }
    Ok(report)
}

/// Drops the rows of `table` that `erased` names (with the label it gives),
/// reporting each as rejected: the customer asked to be forgotten.
fn leave_out<T>(
    rows: &mut Option<Vec<T>>,
    table: &str,
    report: &mut ShopImport,
    erased: impl Fn(&T) -> Option<String>,
) {
    let Some(rows) = rows.as_mut() else { return };
    rows.retain(|row| match erased(row) {
        Some(label) => {
            report
                .rejected
                .entry(table.into())
                .or_default()
                .add(label, "the customer asked to be forgotten");
            false
        }
        None => true,
    });
}

/// A row's verdict: use it (with caveats), or reject it with a reason.
type Verdict<T> = std::result::Result<(T, Vec<String>), Rejection>;

struct ShopReader<'a> {
    conn: &'a Connection,
    path: &'a Path,
    report: &'a mut ShopImport,
    progress: &'a dyn Progress,
}

impl ShopReader<'_> {
    /// Reads one table; `None` when the shop does not have it.
    fn read<T: Keyed>(
        &mut self,
        table: &str,
        convert: fn(&SourceRow<'_>) -> Verdict<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(actual) = self.find_table(table)? else {
            self.report.missing_tables.push(table.to_owned());
            return Ok(None);
        };
        let sql_error = |e: rusqlite::Error| Error::Input {
            path: self.path.display().to_string(),
            message: format!("cannot read table {table}: {e}"),
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT * FROM \"{}\"",
                actual.replace('"', "\"\"")
            ))
            .map_err(sql_error)?;
        let columns: Vec<String> = stmt
            .column_names()
            .iter()
            .map(|c| c.to_lowercase())
            .collect();
        let width = columns.len();
        let raw: Vec<Vec<Value>> = stmt
            .query_map([], |r| (0..width).map(|i| r.get::<_, Value>(i)).collect())
            .map_err(sql_error)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql_error)?;

        self.progress
            .begin(&format!("reading {table}"), raw.len() as u64);
        let mut rows = Vec::with_capacity(raw.len());
        let mut seen = HashSet::new();
        let mut rejected = Problems::default();
        let mut warnings = Problems::default();
        for (i, values) in raw.into_iter().enumerate() {
            let row = SourceRow {
                columns: &columns,
                values,
            };
            let label = |id: Option<&str>| match id {
                Some(id) => format!("{table} row {} (id {id:?})", i + 1),
                None => format!("{table} row {}", i + 1),
            };
            match convert(&row) {
                Ok((item, caveats)) => {
                    if !seen.insert(item.key().to_owned()) {
                        rejected.add(
                            label(Some(item.key())),
                            "duplicate id in the shop table (first row kept)",
                        );
                        continue;
                    }
                    for caveat in caveats {
                        warnings.add(label(Some(item.key())), caveat);
                    }
                    rows.push(item);
                }
                Err(r) => {
                    rejected.add_detailed(label(row.first_id().as_deref()), r.reason, r.detail)
                }
            }
            self.progress.advance(1);
        }
        self.progress.end();
        if !rejected.is_empty() {
            tracing::info!(table, rejected = rejected.count, "rows rejected");
            self.report.rejected.insert(table.to_owned(), rejected);
        }
        if !warnings.is_empty() {
            self.report.warnings.insert(table.to_owned(), warnings);
        }
        Ok(Some(rows))
    }

    fn find_table(&self, table: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND lower(name) = ?1",
                [table],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(Error::Input {
                    path: self.path.display().to_string(),
                    message: format!("cannot list tables: {e}"),
                }),
            })
    }
}

/// A mirror row's id, for duplicate detection and messages.
trait Keyed {
    fn key(&self) -> &str;
}
impl Keyed for ShopOrder {
    fn key(&self) -> &str {
        &self.order_id
    }
}
impl Keyed for BaseProduct {
    fn key(&self) -> &str {
        &self.id
    }
}
impl Keyed for EndProduct {
    fn key(&self) -> &str {
        &self.id
    }
}
impl Keyed for Category {
    fn key(&self) -> &str {
        &self.id
    }
}
impl Keyed for Image {
    fn key(&self) -> &str {
        &self.id
    }
}
impl Keyed for Account {
    fn key(&self) -> &str {
        &self.id
    }
}

/// One row of a shop table, read by column name.
struct SourceRow<'a> {
    columns: &'a [String],
    values: Vec<Value>,
}

impl SourceRow<'_> {
    /// The value of the first of `names` that the table has.
    fn get(&self, names: &[&str]) -> Option<&Value> {
        names.iter().find_map(|name| {
            self.columns
                .iter()
                .position(|c| c == name)
                .map(|i| &self.values[i])
        })
    }

    fn has(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.columns.iter().any(|c| c == n))
    }

    fn text(&self, names: &[&str]) -> Option<String> {
        self.get(names).and_then(value_text)
    }

    /// The row's id, for messages about rows that could not be read.
    fn first_id(&self) -> Option<String> {
        self.text(&["shoplazza_id", "order_id", "id"])
    }

    /// Columns not in `known`, as a JSON object (NULLs left out).
    fn attributes(&self, known: &[&str]) -> Option<String> {
        let mut map = serde_json::Map::new();
        for (col, value) in self.columns.iter().zip(&self.values) {
            if known.contains(&col.as_str()) {
                continue;
            }
            let json = match value {
                Value::Null => continue,
                Value::Integer(i) => serde_json::Value::from(*i),
                Value::Real(f) => serde_json::Value::from(*f),
                Value::Text(t) => serde_json::Value::from(t.as_str()),
                Value::Blob(b) => serde_json::Value::from(format!("blob:{}", hex::encode(b))),
            };
            map.insert(col.clone(), json);
        }
        (!map.is_empty()).then(|| serde_json::Value::Object(map).to_string())
    }
}

/// Text of an id or a label: numbers become their decimal form (`12.0` → `12`),
/// empty strings are absent.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null | Value::Blob(_) => None,
        Value::Integer(i) => Some(i.to_string()),
        Value::Real(f) if f.fract() == 0.0 && f.abs() < 1e15 => Some((*f as i64).to_string()),
        Value::Real(f) => Some(f.to_string()),
        Value::Text(t) => {
            let t = t.trim();
            (!t.is_empty()).then(|| t.to_owned())
        }
    }
}

fn value_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Real(f) => Some(*f),
        Value::Text(t) => t.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

fn value_i64(v: &Value) -> Option<i64> {
    value_f64(v).map(|f| f.round() as i64)
}

fn value_timestamp(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(seconds_from_number(*i)),
        Value::Real(f) if f.is_finite() => Some(seconds_from_number(f.floor() as i64)),
        Value::Text(t) => parse_timestamp(t),
        _ => None,
    }
}

/// An optional timestamp column: absent or NULL is fine, unreadable is a caveat.
fn optional_timestamp(
    row: &SourceRow<'_>,
    names: &[&str],
    caveats: &mut Vec<String>,
) -> Option<i64> {
    match row.get(names) {
        None | Some(Value::Null) => None,
        Some(v) => {
            let t = value_timestamp(v);
            if t.is_none() {
                caveats.push(format!("unreadable {} (kept as unknown)", names[0]));
            }
            t
        }
    }
}

fn optional_number(row: &SourceRow<'_>, names: &[&str], caveats: &mut Vec<String>) -> Option<f64> {
    match row.get(names) {
        None | Some(Value::Null) => None,
        Some(v) => {
            let n = value_f64(v);
            if n.is_none() {
                caveats.push(format!("{} is not a number (kept as unknown)", names[0]));
            }
            n
        }
    }
}

fn required_id(row: &SourceRow<'_>, names: &[&str]) -> std::result::Result<String, Rejection> {
    if !row.has(names) {
        return Err(format!(
            "the table has no id column (expected one of {})",
            names.join(", ")
        )
        .into());
    }
    row.text(names)
        .ok_or_else(|| format!("{} is empty", names[0]).into())
}

const ORDER_ID: &[&str] = &["shoplazza_id", "order_id", "id"];
const ORDER_EMAIL: &[&str] = &["email", "customer_email", "contact_email"];
const ORDER_CUSTOMER: &[&str] = &["customer_id"];
const ORDER_STATUS: &[&str] = &["financial_status", "payment_status"];
const ORDER_ITEMS: &[&str] = &["line_items", "items"];
const ORDER_TIME: &[&str] = &["created_at", "placed_at", "order_date"];

fn order_from_row(row: &SourceRow<'_>) -> Verdict<ShopOrder> {
    let order_id = required_id(row, ORDER_ID)?;
    let mut caveats = Vec::new();
    let created_at = match row.get(ORDER_TIME) {
        None if !row.has(ORDER_TIME) => return Err("the table has no created_at column".into()),
        None | Some(Value::Null) => return Err("created_at is empty".into()),
        Some(v) => value_timestamp(v).ok_or_else(|| {
            Rejection::new(
                "created_at is not a time",
                value_text(v).unwrap_or_default(),
            )
        })?,
    };
    let line_items_raw = match row.get(ORDER_ITEMS) {
        None if !row.has(ORDER_ITEMS) => return Err("the table has no line_items column".into()),
        Some(Value::Text(t)) => t.clone(),
        Some(Value::Blob(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => return Err("line_items is empty".into()),
    };
    let lines = parse_line_items(&line_items_raw, &mut caveats)?;
    let financial_status = match row.text(ORDER_STATUS) {
        Some(s) => {
            let s = s.to_lowercase();
            if !KNOWN_STATUSES.contains(&s.as_str()) {
                caveats.push(format!(
                    "unknown financial_status {s:?} (kept; not treated as paid)"
                ));
            }
            s
        }
        None => {
            caveats.push("no financial_status (kept as \"unknown\"; not treated as paid)".into());
            "unknown".into()
        }
    };
    let email = row.text(ORDER_EMAIL);
    let customer_id = row.text(ORDER_CUSTOMER);
    if email.is_none() {
        caveats.push("no email (kept; its purchases cannot be attributed to a customer)".into());
    }
    let known: Vec<&str> = [
        ORDER_ID,
        ORDER_EMAIL,
        ORDER_CUSTOMER,
        ORDER_STATUS,
        ORDER_ITEMS,
        ORDER_TIME,
    ]
    .concat();
    Ok((
        ShopOrder {
            order_id,
            email,
            customer_id,
            financial_status,
            created_at,
            line_items_raw,
            lines,
            attributes: row.attributes(&known),
            source: "import".into(),
        },
        caveats,
    ))
}

/// Parses `line_items`: a JSON array of `{product_id, variant_id, quantity, price,
/// title}` (ids and numbers as JSON numbers or strings). Items without a product
/// are dropped with a caveat; JSON that is not an array rejects the order.
pub fn parse_line_items(
    raw: &str,
    caveats: &mut Vec<String>,
) -> std::result::Result<Vec<OrderLine>, Rejection> {
    let mut json: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| Rejection::new("line_items is not valid JSON", e.to_string()))?;
    // Some shops store the array double-encoded, as a JSON string.
    if let serde_json::Value::String(inner) = &json {
        json = serde_json::from_str(inner)
            .map_err(|e| Rejection::new("line_items is not valid JSON", e.to_string()))?;
    }
    let serde_json::Value::Array(items) = json else {
        return Err(Rejection::new(
            "line_items is not a JSON array",
            truncate(raw),
        ));
    };
    Ok(line_items_from_json(&items, caveats))
}

/// Line items from their JSON objects. Items without a product are dropped with a
/// caveat. (A line item's own `id` is not its product: it is never used as one.)
pub fn line_items_from_json(
    items: &[serde_json::Value],
    caveats: &mut Vec<String>,
) -> Vec<OrderLine> {
    let mut lines = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |names: &[&str]| names.iter().find_map(|n| item.get(n)).and_then(json_text);
        let Some(product_id) = field(&["product_id", "productId"]) else {
            caveats.push(format!("line item {} has no product_id (dropped)", i + 1));
            continue;
        };
        let quantity = match item.get("quantity") {
            None | Some(serde_json::Value::Null) => 1,
            Some(q) => match json_text(q).and_then(|t| t.parse::<f64>().ok()) {
                Some(q) if q >= 1.0 => q.round() as i64,
                _ => {
                    caveats.push(format!("line item {} has quantity {q} (dropped)", i + 1));
                    continue;
                }
            },
        };
        lines.push(OrderLine {
            product_id,
            variant_id: field(&["variant_id", "variantId"]),
            quantity,
            price: field(&["price"]).and_then(|p| p.parse().ok()),
            title: field(&["title", "product_title", "name"]),
        });
    }
    lines
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

pub(crate) fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        }
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn base_product_from_row(row: &SourceRow<'_>) -> Verdict<BaseProduct> {
    const ID: &[&str] = &["id"];
    const TITLE: &[&str] = &["title", "name"];
    const CATEGORY: &[&str] = &["category_id", "category"];
    const PRICE: &[&str] = &["price", "base_price"];
    let id = required_id(row, ID)?;
    let mut caveats = Vec::new();
    let price = optional_number(row, PRICE, &mut caveats);
    let category_id = row.text(CATEGORY);
    if category_id.is_none() {
        caveats.push("no category_id (no same-category views for it)".into());
    }
    Ok((
        BaseProduct {
            id,
            title: row.text(TITLE),
            category_id,
            price,
            attributes: row.attributes(&[ID, TITLE, CATEGORY, PRICE].concat()),
        },
        caveats,
    ))
}

fn end_product_from_row(row: &SourceRow<'_>) -> Verdict<EndProduct> {
    const ID: &[&str] = &["id"];
    const BASE: &[&str] = &["base_product_id"];
    const DESIGNER: &[&str] = &["designer_id", "account_id"];
    const TITLE: &[&str] = &["title", "name"];
    const CATEGORY: &[&str] = &["category_id"];
    const PRICE: &[&str] = &["price"];
    let id = required_id(row, ID)?;
    let mut caveats = Vec::new();
    let price = optional_number(row, PRICE, &mut caveats);
    Ok((
        EndProduct {
            id,
            base_product_id: row.text(BASE),
            designer_id: row.text(DESIGNER),
            title: row.text(TITLE),
            category_id: row.text(CATEGORY),
            price,
            attributes: row.attributes(&[ID, BASE, DESIGNER, TITLE, CATEGORY, PRICE].concat()),
        },
        caveats,
    ))
}

fn category_from_row(row: &SourceRow<'_>) -> Verdict<Category> {
    const ID: &[&str] = &["id"];
    const NAME: &[&str] = &["name", "title"];
    let id = required_id(row, ID)?;
    Ok((
        Category {
            id,
            name: row.text(NAME),
            attributes: row.attributes(&[ID, NAME].concat()),
        },
        Vec::new(),
    ))
}

fn image_from_row(row: &SourceRow<'_>) -> Verdict<Image> {
    const ID: &[&str] = &["id"];
    const KIND: &[&str] = &["type", "image_type"];
    const ENTITY: &[&str] = &["entity_id", "product_id"];
    const VIEWS: &[&str] = &["view_count", "views"];
    const TIME: &[&str] = &["created_at"];
    let id = required_id(row, ID)?;
    let mut caveats = Vec::new();
    let view_count = match row.get(VIEWS) {
        None | Some(Value::Null) => 0,
        Some(v) => match value_i64(v) {
            Some(n) if n >= 0 => n,
            _ => {
                caveats.push("view_count is not a count (kept as 0)".into());
                0
            }
        },
    };
    let created_at = optional_timestamp(row, TIME, &mut caveats);
    Ok((
        Image {
            id,
            kind: row.text(KIND).map(|k| k.to_lowercase()),
            entity_id: row.text(ENTITY),
            view_count,
            created_at,
            attributes: row.attributes(&[ID, KIND, ENTITY, VIEWS, TIME].concat()),
        },
        caveats,
    ))
}

fn account_from_row(row: &SourceRow<'_>) -> Verdict<Account> {
    const ID: &[&str] = &["id"];
    const EMAIL: &[&str] = &["email"];
    const TIME: &[&str] = &["created_at"];
    let id = required_id(row, ID)?;
    let mut caveats = Vec::new();
    let created_at = optional_timestamp(row, TIME, &mut caveats);
    Ok((
        Account {
            id,
            email: row.text(EMAIL),
            created_at,
            attributes: row.attributes(&[ID, EMAIL, TIME].concat()),
        },
        caveats,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_items_accept_numbers_strings_and_double_encoding() {
        let mut caveats = Vec::new();
        let lines = parse_line_items(
            r#"[{"product_id": 12, "quantity": "2", "price": "16.99"},
                {"product_id": "p-9", "title": "Mug"},
                {"quantity": 1},
                {"product_id": "p-1", "quantity": 0}]"#,
            &mut caveats,
        )
        .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (
                lines[0].product_id.as_str(),
                lines[0].quantity,
                lines[0].price
            ),
            ("12", 2, Some(16.99))
        );
        assert_eq!(lines[1].quantity, 1);
        assert_eq!(caveats.len(), 2);
        let double = serde_json::to_string(r#"[{"product_id":"x"}]"#).unwrap();
        assert_eq!(parse_line_items(&double, &mut caveats).unwrap().len(), 1);
    }

    #[test]
    fn broken_line_items_say_why() {
        let mut caveats = Vec::new();
        assert!(parse_line_items("[{\"product_id\": ", &mut caveats)
            .unwrap_err()
            .reason
            .contains("not valid JSON"));
        assert!(parse_line_items("{\"a\": 1}", &mut caveats)
            .unwrap_err()
            .reason
            .contains("not a JSON array"));
    }
}
