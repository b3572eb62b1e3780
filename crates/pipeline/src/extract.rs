//! The shop mirror into training interactions (ORIGIN §2, without its flaws).
//!
//! - Purchases: one `purchase` row (5.0) per product of each paid order, user =
//!   keyed hash of the normalised email, quantity summed over the order's lines.
//! - Simulated views (switchable off, flagged `synthetic`): one pre-purchase
//!   `view` (3.0) 60–3,660 s before the purchase, and up to three same-category
//!   `view`s (2.0), each of three draws taken with 30 % chance, 300–7,500 s before.
//!   The random stream is seeded by `(seed, order, product)`, so the same shop and
//!   seed give the same rows in any order and on any machine, and a new order
//!   never changes an old order's rows.
//! - Design-image views: one `image_view` (1.0) per viewed design image, at its
//!   upload time, quantity = its view count, for the user `anonymous:image:<id>`
//!   (see [`ANONYMOUS_PREFIX`]): an item-level popularity signal that every
//!   consumer can recognise as no one's history, stable across runs (the seed
//!   drew a new random "user" per image on every run).
//!
//! The rows of each order (origin `order:<id>`) and of the image table (origin
//! `images`) are reconciled, not appended: a second run inserts nothing, and a
//! changed shop updates exactly what changed.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use manirec_store::{
    Interaction, InteractionKey, Objects, OriginRows, ReconcileCounts, ReconcileScope, Source,
    Store, ANONYMOUS_PREFIX,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::export::{interactions_csv, sha256_hex};
use crate::identity::UserKey;
use crate::report::Problems;
use crate::{Progress, Result};

/// Origins reconciled per transaction.
const CHUNK: usize = 512;

/// How extraction runs.
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Generate the simulated views.
    pub simulate: bool,
    /// Seed of the simulation.
    pub seed: u64,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            simulate: true,
            seed: 42,
        }
    }
}

/// What an extraction derived and wrote.
#[derive(Debug, Default, Serialize)]
pub struct Extraction {
    /// Purchase rows derived from paid orders.
    pub purchases: u64,
    /// Simulated pre-purchase views.
    pub views: u64,
    /// Simulated same-category views.
    pub similar_views: u64,
    /// Image-view rows (one per viewed design image).
    pub image_views: u64,
    /// Rows written for the first time.
    pub inserted: u64,
    /// Rows whose rating or quantity changed.
    pub updated: u64,
    /// Rows no longer derived (an order's items changed), deleted.
    pub removed: u64,
    /// Rows already stored as derived.
    pub unchanged: u64,
    /// Paid orders and viewed images that gave no rows, with reasons.
    pub skipped: Problems,
    /// The CSV written to the object store.
    pub export: Option<ExportedFile>,
}

/// A file written to the object store.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedFile {
    /// Object key.
    pub key: String,
    /// Data rows.
    pub rows: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
}

/// Derives the interactions of the shop mirror (nothing is written).
pub fn derive(
    store: &Store,
    key: &UserKey,
    options: ExtractOptions,
) -> Result<(Vec<OriginRows>, Extraction)> {
    let mut summary = Extraction::default();
    let catalog = store.catalog()?;
    let mut category_of: HashMap<&str, (&str, &str)> = HashMap::new();
    let mut members: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for item in &catalog {
        category_of.insert(&item.item_id, (item.kind, &item.category_id));
        members
            .entry((item.kind, &item.category_id))
            .or_default()
            .push(&item.item_id);
    }

    let mut batches = Vec::new();
    for order in store.orders_with_status("paid")? {
        let label = format!("order {:?}", order.order_id);
        let Some(email) = order.email.as_deref() else {
            summary.skipped.add(label, "paid order without an email");
            continue;
        };
        if order.lines.is_empty() {
            summary
                .skipped
                .add(label, "paid order without usable line items");
            continue;
        }
        let user_id = key.user_id_for_email(email);
        let origin = format!("order:{}", order.order_id);
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
        let mut push = |row: Interaction, counter: &mut u64| {
            if keys.insert(row.key.clone()) {
                *counter += 1;
                rows.push(row);
            }
        };
        let row = |item: &str, ts: i64, kind: &str, rating: f64, synthetic: bool, quantity: i64| {
            Interaction {
                key: InteractionKey {
                    user_id: user_id.clone(),
                    item_id: item.to_owned(),
                    timestamp: ts,
                    interaction_type: kind.to_owned(),
                },
                rating,
                source: Source::ExistingData,
                synthetic,
                quantity,
                origin: Some(origin.clone()),
            }
        };
        for &(product, quantity) in &quantities {
            let t = order.created_at;
            push(
                row(product, t, "purchase", 5.0, false, quantity),
                &mut summary.purchases,
            );
            if !options.simulate {
                continue;
            }
            let mut rng = simulation_rng(options.seed, &order.order_id, product);
            let before = rng.random_range(60..=3660);
            push(
                row(product, t - before, "view", 3.0, true, 1),
                &mut summary.views,
            );
            let Some(&(kind, category)) = category_of.get(product) else {
                continue;
            };
            let candidates = &members[&(kind, category)];
            let mut picked: Vec<&str> = Vec::new();
            for _ in 0..3 {
                if !rng.random_bool(0.3) {
                    continue;
                }
                // A few tries to find an item not yet picked; small categories may have none.
                for _ in 0..4 {
                    let c = candidates[rng.random_range(0..candidates.len())];
                    if c != product && !picked.contains(&c) {
                        picked.push(c);
                        let before = rng.random_range(300..=7500);
                        push(
                            row(c, t - before, "view", 2.0, true, 1),
                            &mut summary.similar_views,
                        );
                        break;
                    }
                }
            }
        }
        batches.push(OriginRows { origin, rows });
    }

    let mut images = Vec::new();
    for image in store.viewed_design_images()? {
        match (image.entity_id, image.created_at) {
            (Some(item), Some(ts)) => images.push((image.id, item, ts, image.view_count)),
            _ => summary.skipped.add(
                format!("image {:?}", image.id),
                "viewed design image without a created_at",
            ),
        }
    }
    summary.image_views = images.len() as u64;
    batches.push(OriginRows {
        origin: "images".into(),
        rows: images
            .into_iter()
            .map(|(image_id, item, ts, views)| Interaction {
                key: InteractionKey {
                    user_id: format!("{ANONYMOUS_PREFIX}image:{image_id}"),
                    item_id: item,
                    timestamp: ts,
                    interaction_type: "image_view".into(),
                },
                rating: 1.0,
                source: Source::ExistingData,
                synthetic: false,
                quantity: views,
                origin: Some("images".into()),
            })
            .collect(),
    });
    Ok((batches, summary))
}

/// The random stream of one purchase: a function of the seed, the order and the
/// product only.
fn simulation_rng(seed: u64, order_id: &str, product_id: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update((order_id.len() as u64).to_le_bytes());
    h.update(order_id.as_bytes());
    h.update(product_id.as_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

/// Derives the shop's interactions, reconciles them into the store, and writes
/// the existing-data CSV to `training-data/existing-data-<ms>.csv`.
pub async fn extract(
    store: &mut Store,
    objects: &Objects,
    key: &UserKey,
    options: ExtractOptions,
    progress: &dyn Progress,
) -> Result<Extraction> {
    let (batches, mut summary) = derive(store, key, options)?;
    let scope = if options.simulate {
        ReconcileScope::All
    } else {
        ReconcileScope::RealOnly
    };
    progress.begin("writing interactions", batches.len() as u64);
    let mut total = ReconcileCounts::default();
    for chunk in batches.chunks(CHUNK) {
        let c = store.reconcile_origins(chunk, scope)?;
        total.inserted += c.inserted;
        total.updated += c.updated;
        total.removed += c.removed;
        total.unchanged += c.unchanged;
        progress.advance(chunk.len() as u64);
    }
    progress.end();
    summary.inserted = total.inserted;
    summary.updated = total.updated;
    summary.removed = total.removed;
    summary.unchanged = total.unchanged;

    let (csv, rows) = interactions_csv(store, Some(Source::ExistingData))?;
    let key = format!(
        "training-data/existing-data-{}.csv",
        manirec_store::now_ms()
    );
    let sha256 = sha256_hex(&csv);
    objects.put(&key, Bytes::from(csv)).await?;
    summary.export = Some(ExportedFile { key, rows, sha256 });
    Ok(summary)
}
