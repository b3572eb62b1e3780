//! Shoplazza's order object (webhook payloads and the orders API) into the shop
//! mirror's [`ShopOrder`], following `SHOPLAZZA.md`: the order may come wrapped
//! (`{"order": {...}}`) or bare; ids are strings (numbers accepted); there is no
//! top-level email (it is `customer.email`, else the shipping or billing
//! address's); `placed_at` is the payment time; times parse leniently.

use manirec_store::{Category, EndProduct, ShopOrder};
use serde_json::Value;

use crate::import::shop::{json_text, line_items_from_json};
use crate::report::Rejection;
use crate::time::parse_timestamp;

/// An order as Shoplazza sent it, understood.
#[derive(Debug, Clone)]
pub struct ShoplazzaOrder {
    /// The mirror row (source as given to [`parse_order`]).
    pub order: ShopOrder,
    /// When it was paid (`placed_at`), else created: the purchase time.
    pub purchased_at: i64,
    /// The order's `updated_at`, to order deliveries of one order.
    pub updated_at: Option<i64>,
    /// Line items that could not be used.
    pub caveats: Vec<String>,
}

fn text_at(v: &Value, path: &[&str]) -> Option<String> {
    path.iter()
        .try_fold(v, |v, key| v.get(key))
        .and_then(json_text)
}

fn time_at(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Number(n) => n.as_i64().map(crate::time::seconds_from_number),
        Value::String(s) => parse_timestamp(s),
        _ => None,
    }
}

/// Parses an order payload. `topic` decides paid-ness too: an `orders/paid`
/// delivery is paid whatever status it carries.
pub fn parse_order(
    payload: &Value,
    topic: &str,
    source: &str,
) -> Result<ShoplazzaOrder, Rejection> {
    let o = match payload.get("order") {
        Some(inner) if inner.is_object() => inner,
        _ => payload,
    };
    if !o.is_object() {
        return Err("the payload is not an order object".into());
    }
    let order_id = text_at(o, &["id"]).ok_or("the order has no id")?;
    let created_at = time_at(o, "created_at").ok_or("the order has no readable created_at")?;
    let purchased_at = time_at(o, "placed_at").unwrap_or(created_at);
    let email = [
        &["customer", "email"][..],
        &["shipping_address", "email"],
        &["billing_address", "email"],
        &["email"],
        &["contact_email"],
    ]
    .iter()
    .find_map(|path| text_at(o, path));
    let mut financial_status = text_at(o, &["financial_status"])
        .map(|s| s.to_lowercase())
        .unwrap_or_else(|| "unknown".into());
    if topic == "orders/paid" && !crate::orders::is_paid(&financial_status) {
        financial_status = "paid".into();
    }
    let items = match o.get("line_items") {
        Some(Value::Array(items)) => items.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err("line_items is not an array".into()),
    };
    let mut caveats = Vec::new();
    let lines = line_items_from_json(items, &mut caveats);
    let mut attributes = serde_json::Map::new();
    for key in [
        "number",
        "status",
        "currency",
        "total_price",
        "placed_at",
        "canceled_at",
        "updated_at",
    ] {
        if let Some(v) = o.get(key).filter(|v| !v.is_null()) {
            attributes.insert(key.into(), v.clone());
        }
    }
    Ok(ShoplazzaOrder {
        order: ShopOrder {
            order_id,
            email,
            customer_id: text_at(o, &["customer", "id"]),
            financial_status,
            created_at,
            line_items_raw: Value::Array(items.to_vec()).to_string(),
            lines,
            attributes: (!attributes.is_empty()).then(|| Value::Object(attributes).to_string()),
            source: source.to_owned(),
        },
        purchased_at,
        updated_at: time_at(o, "updated_at"),
        caveats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrapped_or_bare_the_email_is_found_where_shoplazza_puts_it() {
        let bare = json!({
            "id": "11218-00000001",
            "financial_status": "Paid",
            "created_at": "2024-03-01T10:00:00Z",
            "placed_at": "2024-03-01 18:05:00 +0800",
            "updated_at": "2024-03-01T10:06:00Z",
            "customer": {"id": "c-uuid", "email": null},
            "shipping_address": {"email": "Buyer@Example.com"},
            "line_items": [{"id": "li-1", "product_id": "p-uuid", "quantity": 2, "price": "16.99"},
                           {"id": "li-2", "quantity": 1}]
        });
        let wrapped = json!({ "order": bare.clone() });
        for payload in [bare, wrapped] {
            let o = parse_order(&payload, "orders/update", "webhook").unwrap();
            assert_eq!(o.order.order_id, "11218-00000001");
            assert_eq!(o.order.email.as_deref(), Some("Buyer@Example.com"));
            assert_eq!(o.order.financial_status, "paid");
            assert_eq!(
                o.order.lines.len(),
                1,
                "a line item's own id is not a product"
            );
            assert_eq!(o.order.lines[0].price, Some(16.99));
            assert_eq!(o.purchased_at, 1_709_287_500);
            assert_eq!(o.updated_at, Some(1_709_287_560));
            assert_eq!(o.caveats.len(), 1);
        }
    }

    #[test]
    fn an_orders_paid_delivery_is_paid_and_garbage_is_refused() {
        let o = parse_order(
            &json!({"id": 7, "financial_status": "paying", "created_at": "2024-01-01T00:00:00Z"}),
            "orders/paid",
            "webhook",
        )
        .unwrap();
        assert_eq!(
            (o.order.order_id.as_str(), o.order.financial_status.as_str()),
            ("7", "paid")
        );
        assert!(parse_order(&json!([1, 2]), "orders/paid", "webhook").is_err());
        assert!(parse_order(
            &json!({"created_at": "2024-01-01"}),
            "orders/paid",
            "webhook"
        )
        .is_err());
        assert!(parse_order(&json!({"id": "x"}), "orders/paid", "webhook").is_err());
    }
}

/// A product as Shoplazza sent it, understood as a design of the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct ShoplazzaProduct {
    /// The mirror row.
    pub product: EndProduct,
    /// The category named by `product_type` when no `category_id` was given
    /// (the caller resolves it against the shop's categories).
    pub product_type: Option<String>,
    /// The product's `updated_at`, to order deliveries of one product.
    pub updated_at: Option<i64>,
}

/// Parses a product payload (`products/create`, `products/update`): wrapped
/// (`{"product": {...}}`) or bare. The mapping (README, "Live catalogue"):
/// `id` → the item id; `title`; `base_product_id`, `designer_id` and
/// `category_id` when the shop's app adds them; else the designer is `vendor`
/// and the category is `product_type` (by name); the price is the first
/// variant's; `published_at: null` (or `published: false`) hides it;
/// `handle`, `tags`, the first image's `src`, `vendor`, `product_type`,
/// `published_at` and `updated_at` are kept in its attributes.
pub fn parse_product(payload: &Value) -> Result<ShoplazzaProduct, Rejection> {
    let p = match payload.get("product") {
        Some(inner) if inner.is_object() => inner,
        _ => payload,
    };
    if !p.is_object() {
        return Err("the payload is not a product object".into());
    }
    let id = text_at(p, &["id"]).ok_or("the product has no id")?;
    let price = p
        .get("variants")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
        .and_then(|v| v.get("price"))
        .and_then(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .or_else(|| match p.get("price") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        })
        .filter(|v: &f64| v.is_finite() && *v >= 0.0);
    let mut attributes = serde_json::Map::new();
    for key in [
        "handle",
        "tags",
        "vendor",
        "product_type",
        "published_at",
        "updated_at",
        "status",
    ] {
        if let Some(v) = p.get(key).filter(|v| !v.is_null()) {
            attributes.insert(key.into(), v.clone());
        }
    }
    let image = p
        .get("images")
        .and_then(Value::as_array)
        .and_then(|i| i.first())
        .and_then(|i| i.get("src"))
        .or_else(|| p.get("image").and_then(|i| i.get("src")))
        .and_then(json_text);
    if let Some(src) = image {
        attributes.insert("image".into(), Value::String(src));
    }
    // Unpublished: Shoplazza's `published_at` is null (or `published` false).
    let published = match (p.get("published"), p.get("published_at")) {
        (Some(Value::Bool(b)), _) => *b,
        (_, Some(Value::Null)) => false,
        _ => true,
    };
    attributes.insert("published".into(), Value::Bool(published));
    // Serving offers live designs in their category before any model knows them.
    attributes.insert("source".into(), Value::String("webhook".into()));
    let product_type = text_at(p, &["product_type"]);
    Ok(ShoplazzaProduct {
        product: EndProduct {
            id,
            base_product_id: text_at(p, &["base_product_id"]),
            designer_id: text_at(p, &["designer_id"]).or_else(|| text_at(p, &["vendor"])),
            title: text_at(p, &["title"]),
            category_id: text_at(p, &["category_id"]),
            price,
            attributes: Some(Value::Object(attributes).to_string()),
        },
        product_type,
        updated_at: time_at(p, "updated_at"),
    })
}

/// The category a product's `product_type` names: the shop's category of that
/// name (any case, singular or plural), else a new category whose id is the name.
pub fn category_for_type(
    categories: &[Category],
    product_type: &str,
) -> (String, Option<Category>) {
    let fold = |s: &str| {
        let l = s.trim().to_lowercase();
        l.strip_suffix('s').unwrap_or(&l).to_owned()
    };
    let wanted = fold(product_type);
    match categories
        .iter()
        .find(|c| c.id == product_type || c.name.as_deref().is_some_and(|n| fold(n) == wanted))
    {
        Some(c) => (c.id.clone(), None),
        None => {
            let id = product_type.trim().to_owned();
            (
                id.clone(),
                Some(Category {
                    id,
                    name: Some(product_type.trim().to_owned()),
                    attributes: None,
                }),
            )
        }
    }
}
