//! The shop mirror: manirec's copy of the shop's orders, catalogue, images and
//! accounts. Raw emails live here and nowhere else.
//!
//! All six tables share one upsert mechanism ([`MirrorRow`]): a row is keyed by
//! the shop's id, re-importing an unchanged row touches nothing, a changed row is
//! updated in place, so an import can be repeated at will.

use std::collections::HashMap;

use crate::sql::{params, Conn, OwnedValue as Value, ToParam};
use serde::Serialize;

use crate::{now_ms, Result, Store};

/// What an upsert did, per row.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UpsertCounts {
    /// Rows that were new.
    pub inserted: u64,
    /// Rows that existed and changed.
    pub updated: u64,
    /// Rows that existed and were identical.
    pub unchanged: u64,
}

impl UpsertCounts {
    /// Rows accepted, whatever happened to them.
    pub fn total(&self) -> u64 {
        self.inserted + self.updated + self.unchanged
    }
}

/// An order of the shop, with its line items parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ShopOrder {
    /// The shop's order id (Shoplazza: a string like `11218-00000001`).
    pub order_id: String,
    /// The customer's email exactly as the shop holds it.
    pub email: Option<String>,
    /// The shop's customer id, where known.
    pub customer_id: Option<String>,
    /// Lower-case financial status (`paid`, `refunded`, …); unknown values are kept.
    pub financial_status: String,
    /// Order time, Unix seconds.
    pub created_at: i64,
    /// `line_items` exactly as received, so nothing the shop sent is lost.
    pub line_items_raw: String,
    /// The line items that could be understood.
    pub lines: Vec<OrderLine>,
    /// Columns manirec does not model, as a JSON object.
    pub attributes: Option<String>,
    /// Where the row came from: `import`, `webhook`, `poll`.
    pub source: String,
}

/// One line item of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderLine {
    /// The product bought (the training item id).
    pub product_id: String,
    /// The variant, where given.
    pub variant_id: Option<String>,
    /// Units bought (at least 1).
    pub quantity: i64,
    /// Unit price.
    pub price: Option<f64>,
    /// Title shown at checkout.
    pub title: Option<String>,
}

/// A base product (the blank: a t-shirt, a mug…).
#[derive(Debug, Clone, PartialEq)]
pub struct BaseProduct {
    /// Shop id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// Category id.
    pub category_id: Option<String>,
    /// Price.
    pub price: Option<f64>,
    /// Columns manirec does not model, as a JSON object.
    pub attributes: Option<String>,
}

/// An end product: a designer's design printed on a base product.
#[derive(Debug, Clone, PartialEq)]
pub struct EndProduct {
    /// Shop id.
    pub id: String,
    /// The base product it is printed on.
    pub base_product_id: Option<String>,
    /// The designer.
    pub designer_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Its own category, when the shop gives one (otherwise its base product's).
    pub category_id: Option<String>,
    /// Its own price, when the shop gives one (otherwise its base product's).
    pub price: Option<f64>,
    /// Columns manirec does not model, as a JSON object.
    pub attributes: Option<String>,
}

/// A category of the shop (`Mugs`, `T-shirts`…): lets a category be asked by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Category {
    /// Shop id.
    pub id: String,
    /// Name as the shop shows it.
    pub name: Option<String>,
    /// Columns manirec does not model, as a JSON object.
    pub attributes: Option<String>,
}

/// An image of the shop (designs, mockups…), with its view counter.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Shop id.
    pub id: String,
    /// Image type (`design`, …).
    pub kind: Option<String>,
    /// The product the image shows.
    pub entity_id: Option<String>,
    /// How often it was viewed.
    pub view_count: i64,
    /// Upload time, Unix seconds.
    pub created_at: Option<i64>,
    /// Columns manirec does not model, as a JSON object.
    pub attributes: Option<String>,
}

/// A customer account.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// Shop id.
    pub id: String,
    /// Email as the shop holds it.
    pub email: Option<String>,
    /// Sign-up time, Unix seconds.
    pub created_at: Option<i64>,
    /// Columns manirec does not model, as a JSON object.
    pub attributes: Option<String>,
}

/// A sellable item with its category, as extraction sees the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogItem {
    /// Item id (a base or an end product id).
    pub item_id: String,
    /// `base` or `end`: same-category views stay within one kind of product.
    pub kind: &'static str,
    /// Category (an end product inherits its base product's).
    pub category_id: String,
}

/// What the mirror says of a product, for the models' item features.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemAttributes {
    /// Item id (a base or an end product id).
    pub item_id: String,
    /// `base` or `end`.
    pub kind: &'static str,
    /// Category (an end product inherits its base product's).
    pub category_id: Option<String>,
    /// The base product (a base product is its own).
    pub base_product_id: Option<String>,
    /// The designer (end products only).
    pub designer_id: Option<String>,
    /// The base product's price.
    pub price: Option<f64>,
    /// Whether the design arrived live (a `products/*` webhook), rather than
    /// with an import of the shop's database.
    pub live: bool,
    /// When the mirror's row was last written (Unix ms).
    pub updated_at: i64,
}

/// What a storefront shows of a product: its title, picture, price and the
/// handle of its page. Any of them may be unknown to the mirror.
///
/// Where each comes from (the mirror has no column for a handle or an image
/// URL: they arrive in the `attributes` JSON of the row that carries them):
/// - `title`, `price`: an end product's own, else its base product's (as the
///   models' features read the price); a base product's own.
/// - `handle`: `handle` in the end product's attributes (a `products/*`
///   webhook keeps Shoplazza's handle there; an imported `handle` column lands
///   there too), else in its base product's.
/// - `image`: `image` (or `image_url`) in the product's attributes (the
///   webhook's first image), else one of the shop's images of the product
///   (`shop_images.entity_id`): a mockup before a design before any other kind
///   (avatars never), the most viewed first, then the smallest id; its URL is
///   the `url` (or `src`) column kept in the image's attributes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ItemDetails {
    /// Title as the shop shows it.
    pub title: Option<String>,
    /// URL of the product's picture.
    pub image: Option<String>,
    /// Price.
    pub price: Option<f64>,
    /// The product page's handle (its URL slug in the shop).
    pub handle: Option<String>,
}

/// A text field of a row's `attributes` JSON: the first of `keys` that holds a
/// non-empty string (or a number, written as text).
fn attribute(attributes: Option<&str>, keys: &[&str]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(attributes?).ok()?;
    keys.iter().find_map(|k| match json.get(*k)? {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// How well an image kind shows a product on a card: lower is better; `None`
/// is never shown.
fn image_rank(kind: Option<&str>) -> Option<u8> {
    match kind.map(str::to_ascii_lowercase).as_deref() {
        Some("mockup") => Some(0),
        Some("design") => Some(1),
        Some("avatar") => None,
        _ => Some(2),
    }
}

/// A mirror table's row: its table, key and columns, in one place.
pub(crate) trait MirrorRow {
    const TABLE: &'static str;
    /// Column names; the first is the primary key.
    const COLUMNS: &'static [&'static str];
    fn values(&self) -> Vec<Value>;
}

fn text(v: &Option<String>) -> Value {
    v.clone().map(Value::Text).unwrap_or(Value::Null)
}
fn int(v: Option<i64>) -> Value {
    v.map(Value::Int).unwrap_or(Value::Null)
}
fn real(v: Option<f64>) -> Value {
    v.map(Value::Real).unwrap_or(Value::Null)
}

impl MirrorRow for ShopOrder {
    const TABLE: &'static str = "shop_orders";
    const COLUMNS: &'static [&'static str] = &[
        "order_id",
        "email",
        "customer_id",
        "financial_status",
        "created_at",
        "line_items",
        "attributes",
        "source",
    ];
    fn values(&self) -> Vec<Value> {
        vec![
            Value::Text(self.order_id.clone()),
            text(&self.email),
            text(&self.customer_id),
            Value::Text(self.financial_status.clone()),
            Value::Int(self.created_at),
            Value::Text(self.line_items_raw.clone()),
            text(&self.attributes),
            Value::Text(self.source.clone()),
        ]
    }
}

impl MirrorRow for BaseProduct {
    const TABLE: &'static str = "shop_base_products";
    const COLUMNS: &'static [&'static str] = &["id", "title", "category_id", "price", "attributes"];
    fn values(&self) -> Vec<Value> {
        vec![
            Value::Text(self.id.clone()),
            text(&self.title),
            text(&self.category_id),
            real(self.price),
            text(&self.attributes),
        ]
    }
}

impl MirrorRow for EndProduct {
    const TABLE: &'static str = "shop_end_products";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "base_product_id",
        "designer_id",
        "title",
        "category_id",
        "price",
        "attributes",
    ];
    fn values(&self) -> Vec<Value> {
        vec![
            Value::Text(self.id.clone()),
            text(&self.base_product_id),
            text(&self.designer_id),
            text(&self.title),
            text(&self.category_id),
            real(self.price),
            text(&self.attributes),
        ]
    }
}

impl MirrorRow for Category {
    const TABLE: &'static str = "shop_categories";
    const COLUMNS: &'static [&'static str] = &["id", "name", "attributes"];
    fn values(&self) -> Vec<Value> {
        vec![
            Value::Text(self.id.clone()),
            text(&self.name),
            text(&self.attributes),
        ]
    }
}

impl MirrorRow for Image {
    const TABLE: &'static str = "shop_images";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "type",
        "entity_id",
        "view_count",
        "created_at",
        "attributes",
    ];
    fn values(&self) -> Vec<Value> {
        vec![
            Value::Text(self.id.clone()),
            text(&self.kind),
            text(&self.entity_id),
            Value::Int(self.view_count),
            int(self.created_at),
            text(&self.attributes),
        ]
    }
}

impl MirrorRow for Account {
    const TABLE: &'static str = "shop_accounts";
    const COLUMNS: &'static [&'static str] = &["id", "email", "created_at", "attributes"];
    fn values(&self) -> Vec<Value> {
        vec![
            Value::Text(self.id.clone()),
            text(&self.email),
            int(self.created_at),
            text(&self.attributes),
        ]
    }
}

/// What happened to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upserted {
    Inserted,
    Updated,
    Unchanged,
}

/// Inserts or updates one mirror row; a row identical to the stored one is not written.
pub(crate) fn upsert_row<R: MirrorRow>(tx: &Conn, row: &R) -> Result<Upserted> {
    let cols = R::COLUMNS;
    let key = cols[0];
    let placeholders: Vec<String> = (1..=cols.len() + 1).map(|i| format!("?{i}")).collect();
    let set: Vec<String> = cols[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let differs: Vec<String> = cols[1..]
        .iter()
        .map(|c| {
            format!(
                "{table}.{c} IS DISTINCT FROM excluded.{c}",
                table = R::TABLE
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({cols}, updated_at) VALUES ({ph})
         ON CONFLICT ({key}) DO UPDATE SET {set}, updated_at = excluded.updated_at
         WHERE {differs}",
        table = R::TABLE,
        cols = cols.join(", "),
        ph = placeholders.join(", "),
        set = set.join(", "),
        differs = differs.join(" OR "),
    );
    let exists_sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE {key} = ?1)",
        R::TABLE
    );
    let mut values = row.values();
    let existed: bool = tx.query_row(&exists_sql, params![values[0]], |r| r.get(0))?;
    values.push(Value::Int(now_ms()));
    let params: Vec<&dyn ToParam> = values.iter().map(|v| v as &dyn ToParam).collect();
    let changed = tx.execute(&sql, &params)?;
    Ok(match (existed, changed) {
        (false, _) => Upserted::Inserted,
        (true, 0) => Upserted::Unchanged,
        (true, _) => Upserted::Updated,
    })
}

fn upsert_all<R: MirrorRow>(
    store: &mut Store,
    rows: &[R],
    mut after: impl FnMut(&Conn, &R, Upserted) -> Result<()>,
) -> Result<UpsertCounts> {
    let tx = store.conn.transaction()?;
    let mut counts = UpsertCounts::default();
    for row in rows {
        let outcome = upsert_row(&tx, row)?;
        match outcome {
            Upserted::Inserted => counts.inserted += 1,
            Upserted::Updated => counts.updated += 1,
            Upserted::Unchanged => counts.unchanged += 1,
        }
        after(&tx, row, outcome)?;
    }
    tx.commit()?;
    Ok(counts)
}

/// Upserts one order and, when it is new or changed, replaces its line items.
pub(crate) fn upsert_order_in(tx: &Conn, order: &ShopOrder) -> Result<Upserted> {
    let outcome = upsert_row(tx, order)?;
    if outcome != Upserted::Unchanged {
        replace_order_items(tx, order)?;
    }
    Ok(outcome)
}

fn replace_order_items(tx: &Conn, order: &ShopOrder) -> Result<()> {
    tx.execute(
        "DELETE FROM shop_order_items WHERE order_id = ?1",
        params![&order.order_id],
    )?;
    for (line_no, line) in order.lines.iter().enumerate() {
        tx.execute(
            "INSERT INTO shop_order_items
                 (order_id, line_no, product_id, variant_id, quantity, price, title)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                order.order_id,
                line_no as i64,
                line.product_id,
                line.variant_id,
                line.quantity,
                line.price,
                line.title
            ],
        )?;
    }
    Ok(())
}

impl Store {
    /// Upserts orders and, for every new or changed order, replaces its line items.
    /// One transaction for the whole batch.
    pub fn upsert_orders(&mut self, orders: &[ShopOrder]) -> Result<UpsertCounts> {
        upsert_all(self, orders, |tx, order, outcome| {
            if outcome != Upserted::Unchanged {
                replace_order_items(tx, order)?;
            }
            Ok(())
        })
    }

    /// Upserts base products.
    pub fn upsert_base_products(&mut self, rows: &[BaseProduct]) -> Result<UpsertCounts> {
        upsert_all(self, rows, |_, _, _| Ok(()))
    }

    /// Upserts end products.
    pub fn upsert_end_products(&mut self, rows: &[EndProduct]) -> Result<UpsertCounts> {
        upsert_all(self, rows, |_, _, _| Ok(()))
    }

    /// Upserts categories.
    pub fn upsert_categories(&mut self, rows: &[Category]) -> Result<UpsertCounts> {
        upsert_all(self, rows, |_, _, _| Ok(()))
    }

    /// Every category of the shop, by id.
    pub fn categories(&self) -> Result<Vec<Category>> {
        self.conn.query_map(
            "SELECT id, name, attributes FROM shop_categories ORDER BY id",
            params![],
            |r| {
                Ok(Category {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    attributes: r.get(2)?,
                })
            },
        )
    }

    /// Upserts images.
    pub fn upsert_images(&mut self, rows: &[Image]) -> Result<UpsertCounts> {
        upsert_all(self, rows, |_, _, _| Ok(()))
    }

    /// Upserts accounts.
    pub fn upsert_accounts(&mut self, rows: &[Account]) -> Result<UpsertCounts> {
        upsert_all(self, rows, |_, _, _| Ok(()))
    }

    /// Orders with one of the given financial statuses, with their line items, by
    /// order id.
    pub fn orders_with_status(&self, statuses: &[&str]) -> Result<Vec<ShopOrder>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = vec!["?"; statuses.len()].join(", ");
        let params: Vec<&dyn ToParam> = statuses.iter().map(|s| s as &dyn ToParam).collect();
        let mut orders: Vec<ShopOrder> = self.conn.query_map(
            &format!(
                "SELECT order_id, email, customer_id, financial_status, created_at, line_items,
                        attributes, source
                 FROM shop_orders WHERE financial_status IN ({placeholders}) ORDER BY order_id"
            ),
            &params,
            |r| {
                Ok(ShopOrder {
                    order_id: r.get(0)?,
                    email: r.get(1)?,
                    customer_id: r.get(2)?,
                    financial_status: r.get(3)?,
                    created_at: r.get(4)?,
                    line_items_raw: r.get(5)?,
                    lines: Vec::new(),
                    attributes: r.get(6)?,
                    source: r.get(7)?,
                })
            },
        )?;
        for order in &mut orders {
            order.lines = self.conn.query_map(
                "SELECT product_id, variant_id, quantity, price, title
                 FROM shop_order_items WHERE order_id = ?1 ORDER BY line_no",
                params![order.order_id],
                |r| {
                    Ok(OrderLine {
                        product_id: r.get(0)?,
                        variant_id: r.get(1)?,
                        quantity: r.get(2)?,
                        price: r.get(3)?,
                        title: r.get(4)?,
                    })
                },
            )?;
        }
        Ok(orders)
    }

    /// Every product that has a category: base products, and end products through
    /// their base product. Sorted by item id so that consumers are deterministic.
    pub fn catalog(&self) -> Result<Vec<CatalogItem>> {
        self.conn.query_map(
            "SELECT id, 'base', category_id FROM shop_base_products WHERE category_id IS NOT NULL
             UNION ALL
             SELECT e.id, 'end', COALESCE(e.category_id, b.category_id) FROM shop_end_products e
               LEFT JOIN shop_base_products b ON b.id = e.base_product_id
              WHERE COALESCE(e.category_id, b.category_id) IS NOT NULL
             ORDER BY 1",
            params![],
            |r| {
                Ok(CatalogItem {
                    item_id: r.get(0)?,
                    kind: if r.text(1)? == "base" { "base" } else { "end" },
                    category_id: r.get(2)?,
                })
            },
        )
    }

    /// Every product with what the models may use as its features: category,
    /// base product, designer and price (end products through their base
    /// product). Sorted by item id.
    pub fn item_attributes(&self) -> Result<Vec<ItemAttributes>> {
        self.conn.query_map(
            "SELECT id, 'base', category_id, id, NULL, price, NULL, updated_at FROM shop_base_products
             UNION ALL
             SELECT e.id, 'end', COALESCE(e.category_id, b.category_id), e.base_product_id,
                    e.designer_id, COALESCE(e.price, b.price), e.attributes, e.updated_at
               FROM shop_end_products e
               LEFT JOIN shop_base_products b ON b.id = e.base_product_id
             ORDER BY 1",
            params![],
            |r| {
                // A design that arrived by webhook says so in its own columns.
                let live = r
                    .get::<Option<String>>(6)?
                    .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
                    .is_some_and(|a| a.get("source").and_then(|s| s.as_str()) == Some("webhook"));
                Ok(ItemAttributes {
                    item_id: r.get(0)?,
                    kind: if r.text(1)? == "base" { "base" } else { "end" },
                    category_id: r.get(2)?,
                    base_product_id: r.get(3)?,
                    designer_id: r.get(4)?,
                    price: r.get(5)?,
                    live,
                    updated_at: r.get(7)?,
                })
            },
        )
    }

    /// Every account with an email (the ones a customer id can be computed
    /// for), sorted by id: what the models may know of a customer besides their
    /// interactions.
    pub fn accounts(&self) -> Result<Vec<Account>> {
        self.conn.query_map(
            "SELECT id, email, created_at, attributes FROM shop_accounts
              WHERE email IS NOT NULL ORDER BY id",
            params![],
            |r| {
                Ok(Account {
                    id: r.get(0)?,
                    email: r.get(1)?,
                    created_at: r.get(2)?,
                    attributes: r.get(3)?,
                })
            },
        )
    }

    /// What a storefront card shows of each of `ids` (see [`ItemDetails`] for
    /// where each field comes from), in one statement of neutral SQL. Ids the
    /// mirror does not know are absent from the map.
    pub fn item_details(&self, ids: &[String]) -> Result<HashMap<String, ItemDetails>> {
        let mut out = HashMap::new();
        // Far under both engines' limits on parameters; an answer is at most 100 items.
        for chunk in ids.chunks(500) {
            self.item_details_of(chunk, &mut out)?;
        }
        Ok(out)
    }

    fn item_details_of(
        &self,
        ids: &[String],
        out: &mut HashMap<String, ItemDetails>,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = (1..=ids.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let params: Vec<&dyn ToParam> = ids.iter().map(|s| s as &dyn ToParam).collect();
        // Typed NULLs: PostgreSQL types a UNION's columns pairwise, and two
        // bare NULLs would become text before meeting a number.
        let sql = format!(
            "SELECT 'end', e.id, COALESCE(e.title, b.title), COALESCE(e.price, b.price),
                    e.attributes, b.attributes, CAST(NULL AS TEXT), CAST(NULL AS BIGINT)
               FROM shop_end_products e
               LEFT JOIN shop_base_products b ON b.id = e.base_product_id
              WHERE e.id IN ({list})
             UNION ALL
             SELECT 'base', b.id, b.title, b.price, b.attributes, CAST(NULL AS TEXT),
                    CAST(NULL AS TEXT), CAST(NULL AS BIGINT)
               FROM shop_base_products b
              WHERE b.id IN ({list})
             UNION ALL
             SELECT 'image', i.entity_id, i.id, CAST(NULL AS DOUBLE PRECISION), i.attributes,
                    CAST(NULL AS TEXT), i.type, i.view_count
               FROM shop_images i
              WHERE i.entity_id IN ({list})"
        );
        // The best image of each item so far: (rank, -views, image id, url).
        let mut images: HashMap<String, (u8, i64, String, String)> = HashMap::new();
        let mut products: HashMap<String, (bool, ItemDetails, Option<String>)> = HashMap::new();
        self.conn.query_each(&sql, &params, |r| {
            let item: String = r.get(1)?;
            match r.text(0)? {
                "image" => {
                    let kind: Option<String> = r.get(6)?;
                    let attributes: Option<String> = r.get(4)?;
                    let (Some(rank), Some(url)) = (
                        image_rank(kind.as_deref()),
                        attribute(attributes.as_deref(), &["url", "src"]),
                    ) else {
                        return Ok(());
                    };
                    let key = (rank, -r.get::<Option<i64>>(7)?.unwrap_or(0), r.get(2)?);
                    let better = images
                        .get(&item)
                        .is_none_or(|(a, b, c, _)| key < (*a, *b, c.clone()));
                    if better {
                        images.insert(item, (key.0, key.1, key.2, url));
                    }
                }
                kind => {
                    let is_end = kind == "end";
                    // An id that is both an end and a base product: the end product's row wins.
                    if products
                        .get(&item)
                        .is_some_and(|(end, _, _)| *end && !is_end)
                    {
                        return Ok(());
                    }
                    let own: Option<String> = r.get(4)?;
                    let base: Option<String> = r.get(5)?;
                    let details = ItemDetails {
                        title: r.get(2)?,
                        price: r.get(3)?,
                        handle: attribute(own.as_deref(), &["handle"])
                            .or_else(|| attribute(base.as_deref(), &["handle"])),
                        image: None,
                    };
                    let image = attribute(own.as_deref(), &["image", "image_url"]);
                    products.insert(item, (is_end, details, image));
                }
            }
            Ok(())
        })?;
        for (item, (_, mut details, image)) in products {
            details.image = image.or_else(|| images.remove(&item).map(|(_, _, _, url)| url));
            out.insert(item, details);
        }
        Ok(())
    }

    /// Design images of a product that were viewed, by image id.
    pub fn viewed_design_images(&self) -> Result<Vec<Image>> {
        self.conn.query_map(
            "SELECT id, type, entity_id, view_count, created_at, attributes FROM shop_images
             WHERE type = 'design' AND entity_id IS NOT NULL AND view_count > 0
             ORDER BY id",
            params![],
            |r| {
                Ok(Image {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    entity_id: r.get(2)?,
                    view_count: r.get(3)?,
                    created_at: r.get(4)?,
                    attributes: r.get(5)?,
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(status: &str, lines: &[&str]) -> ShopOrder {
        ShopOrder {
            order_id: "o-1".into(),
            email: Some("A@x.com".into()),
            customer_id: None,
            financial_status: status.into(),
            created_at: 1_700_000_000,
            line_items_raw: "[]".into(),
            lines: lines
                .iter()
                .map(|p| OrderLine {
                    product_id: p.to_string(),
                    variant_id: None,
                    quantity: 1,
                    price: Some(9.5),
                    title: None,
                })
                .collect(),
            attributes: None,
            source: "import".into(),
        }
    }

    fn image(id: &str, kind: &str, entity: &str, views: i64, url: Option<&str>) -> Image {
        Image {
            id: id.into(),
            kind: Some(kind.into()),
            entity_id: Some(entity.into()),
            view_count: views,
            created_at: None,
            attributes: url.map(|u| serde_json::json!({ "url": u }).to_string()),
        }
    }

    fn details_of(store: &mut Store) -> HashMap<String, ItemDetails> {
        store
            .upsert_base_products(&[
                BaseProduct {
                    id: "1".into(),
                    title: Some("Tee".into()),
                    category_id: Some("7".into()),
                    price: Some(19.5),
                    attributes: Some(r#"{"handle":"plain-tee"}"#.into()),
                },
                BaseProduct {
                    id: "2".into(),
                    title: None,
                    category_id: None,
                    price: None,
                    attributes: None,
                },
            ])
            .unwrap();
        let end = |id: &str, title: Option<&str>, price: Option<f64>, attributes: Option<&str>| {
            EndProduct {
                id: id.into(),
                base_product_id: Some("1".into()),
                designer_id: None,
                title: title.map(Into::into),
                category_id: None,
                price,
                attributes: attributes.map(Into::into),
            }
        };
        store
            .upsert_end_products(&[
                // A webhook's design: its own handle and image.
                end(
                    "e-live",
                    Some("Cat tee"),
                    Some(25.0),
                    Some(r#"{"handle":"cat-tee","image":"https://cdn.example/cat.png","source":"webhook"}"#),
                ),
                // An imported design: the base product's title, price and handle; the mirror's images.
                end("e-old", None, None, Some(r#"{"status":"active"}"#)),
            ])
            .unwrap();
        store
            .upsert_images(&[
                image(
                    "10",
                    "design",
                    "e-old",
                    500,
                    Some("https://cdn.example/d10.png"),
                ),
                image(
                    "11",
                    "mockup",
                    "e-old",
                    3,
                    Some("https://cdn.example/m11.png"),
                ),
                image(
                    "12",
                    "mockup",
                    "e-old",
                    9,
                    Some("https://cdn.example/m12.png"),
                ),
                image("13", "mockup", "e-old", 99, None),
                image("14", "avatar", "2", 9, Some("https://cdn.example/a.png")),
                image(
                    "15",
                    "design",
                    "e-live",
                    9,
                    Some("https://cdn.example/ignored.png"),
                ),
            ])
            .unwrap();
        let ids: Vec<String> = ["e-live", "e-old", "1", "2", "unknown"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        store.item_details(&ids).unwrap()
    }

    #[test]
    fn item_details_read_titles_prices_handles_and_images_on_both_engines() {
        let pg = crate::testing::postgres();
        for mut store in [
            Store::open_in_memory().unwrap(),
            Store::connect(pg.url()).unwrap(),
        ] {
            let engine = store.dialect();
            let details = details_of(&mut store);
            assert_eq!(details.len(), 4, "{engine:?}: {details:?}");
            assert!(!details.contains_key("unknown"));
            assert_eq!(
                details["e-live"],
                ItemDetails {
                    title: Some("Cat tee".into()),
                    image: Some("https://cdn.example/cat.png".into()),
                    price: Some(25.0),
                    handle: Some("cat-tee".into()),
                },
                "{engine:?}"
            );
            // The most viewed mockup that has a URL, before a more viewed design.
            assert_eq!(
                details["e-old"],
                ItemDetails {
                    title: Some("Tee".into()),
                    image: Some("https://cdn.example/m12.png".into()),
                    price: Some(19.5),
                    handle: Some("plain-tee".into()),
                },
                "{engine:?}"
            );
            assert_eq!(details["1"].handle.as_deref(), Some("plain-tee"));
            // Nothing known but the id; an avatar is never a product's picture.
            assert_eq!(details["2"], ItemDetails::default(), "{engine:?}");
            assert!(store.item_details(&[]).unwrap().is_empty());
        }
    }

    #[test]
    fn upsert_inserts_then_ignores_identical_then_updates_changed() {
        let mut store = Store::open_in_memory().unwrap();
        let o = order("paid", &["p1", "p2"]);
        let c = store.upsert_orders(std::slice::from_ref(&o)).unwrap();
        assert_eq!((c.inserted, c.updated, c.unchanged), (1, 0, 0));
        let c = store.upsert_orders(std::slice::from_ref(&o)).unwrap();
        assert_eq!((c.inserted, c.updated, c.unchanged), (0, 0, 1));
        let mut changed = order("paid", &["p3"]);
        changed.line_items_raw = "[{\"product_id\":\"p3\"}]".into();
        let c = store.upsert_orders(&[changed]).unwrap();
        assert_eq!((c.inserted, c.updated, c.unchanged), (0, 1, 0));
        let paid = store.orders_with_status(&["paid"]).unwrap();
        assert_eq!(paid.len(), 1);
        assert_eq!(
            paid[0].lines.len(),
            1,
            "line items are replaced, not appended"
        );
        assert_eq!(paid[0].lines[0].product_id, "p3");
    }
}
