//! What a paid order means for training, whichever way it arrived (the shop's
//! database, a webhook, the reconciliation poll): one purchase per product, and,
//! when simulation is on, the views that preceded it.
//!
//! The random stream of each purchase is seeded by `(seed, order, product)`, so
//! the same order gives the same rows on any machine, in any order, and a new
//! order never changes an old order's rows.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use manirec_store::{CatalogItem, Interaction, InteractionKey, OriginRows, ShopOrder, Source};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// Financial statuses whose purchases happened (a partial refund leaves the rest bought).
pub const PAID_STATUSES: &[&str] = &["paid", "partially_refunded"];

/// Statuses whose purchases must not train a model.
pub const REVERSED_STATUSES: &[&str] = &["refunded", "cancelled", "voided"];

/// Whether an order in this status was bought.
pub fn is_paid(status: &str) -> bool {
    PAID_STATUSES.contains(&status)
}

/// The interaction origin of an order's rows.
pub fn order_origin(order_id: &str) -> String {
    format!("order:{order_id}")
}

/// Which simulated views to add to a purchase.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Seed of the random stream.
    pub seed: u64,
    /// How long before the purchase the pre-purchase view (3.0) happened, seconds.
    pub view_before: RangeInclusive<i64>,
    /// Add up to three same-category views (2.0), 30 % chance each, 300–7,500 s before.
    pub similar_views: bool,
}

/// Counts of the rows an order gave.
#[derive(Debug, Default, Clone, Copy)]
pub struct OrderRowCounts {
    /// Purchases.
    pub purchases: u64,
    /// Simulated pre-purchase views.
    pub views: u64,
    /// Simulated same-category views.
    pub similar_views: u64,
}

/// Items by category, for same-category views.
#[derive(Debug, Default)]
pub struct Catalog {
    category_of: HashMap<String, (&'static str, String)>,
    members: HashMap<(&'static str, String), Vec<String>>,
}

impl Catalog {
    /// Indexes the catalogue (same-category views stay within base or end products).
    pub fn new(items: Vec<CatalogItem>) -> Self {
        let mut catalog = Catalog::default();
        for item in items {
            let group = (item.kind, item.category_id);
            catalog
                .members
                .entry(group.clone())
                .or_default()
                .push(item.item_id.clone());
            catalog.category_of.insert(item.item_id, group);
        }
        catalog
    }

    fn neighbours(&self, item: &str) -> Option<&[String]> {
        let group = self.category_of.get(item)?;
        self.members.get(group).map(Vec::as_slice)
    }
}

/// The rows of one paid order for `user_id`, purchased at `purchased_at`.
pub fn order_rows(
    order: &ShopOrder,
    user_id: &str,
    purchased_at: i64,
    source: Source,
    simulation: Option<&Simulation>,
    catalog: &Catalog,
) -> (OriginRows, OrderRowCounts) {
    let origin = order_origin(&order.order_id);
    let mut counts = OrderRowCounts::default();
    // One purchase per product, in the order's own line order.
    let mut quantities: Vec<(&str, i64)> = Vec::new();
    for line in &order.lines {
        match quantities.iter_mut().find(|(p, _)| *p == line.product_id) {
            Some((_, q)) => *q += line.quantity,
            None => quantities.push((&line.product_id, line.quantity)),
        }
    }
    let mut rows = Vec::new();
    let mut keys = HashSet::new();
    let mut push =
        |item: &str, ts: i64, kind: &str, rating: f64, quantity: i64, counter: &mut u64| {
            let row = Interaction {
                key: InteractionKey {
                    user_id: user_id.to_owned(),
                    item_id: item.to_owned(),
                    timestamp: ts,
                    interaction_type: kind.to_owned(),
                },
                rating,
                source,
                synthetic: kind != "purchase",
                quantity,
                origin: Some(origin.clone()),
            };
            if keys.insert(row.key.clone()) {
                *counter += 1;
                rows.push(row);
            }
        };
    for &(product, quantity) in &quantities {
        let t = purchased_at;
        push(product, t, "purchase", 5.0, quantity, &mut counts.purchases);
        let Some(sim) = simulation else { continue };
        let mut rng = purchase_rng(sim.seed, &order.order_id, product);
        let before = rng.random_range(sim.view_before.clone());
        push(product, t - before, "view", 3.0, 1, &mut counts.views);
        if !sim.similar_views {
            continue;
        }
        let Some(candidates) = catalog.neighbours(product) else {
            continue;
        };
        let mut picked: Vec<&str> = Vec::new();
        for _ in 0..3 {
            if !rng.random_bool(0.3) {
                continue;
            }
            // A few tries to find an item not yet picked; small categories may have none.
            for _ in 0..4 {
                let c = candidates[rng.random_range(0..candidates.len())].as_str();
                if c != product && !picked.contains(&c) {
                    picked.push(c);
                    let before = rng.random_range(300..=7500);
                    push(c, t - before, "view", 2.0, 1, &mut counts.similar_views);
                    break;
                }
            }
        }
    }
    (OriginRows { origin, rows }, counts)
}

/// The random stream of one purchase: a function of the seed, the order and the
/// product only.
fn purchase_rng(seed: u64, order_id: &str, product_id: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update((order_id.len() as u64).to_le_bytes());
    h.update(order_id.as_bytes());
    h.update(product_id.as_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}
