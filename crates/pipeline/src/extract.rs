//! The shop mirror into training interactions (ORIGIN §2, without its flaws).
//!
//! - Purchases and simulated views of each paid (or partially refunded) order, as
//!   [`crate::orders`] defines them: user = keyed hash of the normalised email;
//!   one pre-purchase `view` (3.0) 60–3,660 s before, and up to three
//!   same-category `view`s (2.0), flagged `synthetic`, switchable off.
//! - Design-image views: one `image_view` (1.0) per viewed design image, at its
//!   upload time, quantity = its view count, for the user `anonymous:image:<id>`
//!   (see [`ANONYMOUS_PREFIX`]): an item-level popularity signal that every
//!   consumer can recognise as no one's history, stable across runs (the seed
//!   drew a new random "user" per image on every run).
//!
//! The rows of each order (origin `order:<id>`) and of the image table (origin
//! `images`) are reconciled, not appended: a second run inserts nothing, and a
//! changed shop updates exactly what changed.

use bytes::Bytes;
use manirec_store::{
    Interaction, InteractionKey, Objects, OriginRows, ReconcileCounts, ReconcileScope, Source,
    Store, ANONYMOUS_PREFIX,
};
use serde::Serialize;

use crate::export::{interactions_csv, sha256_hex};
use crate::identity::UserKey;
use crate::orders::{order_rows, Catalog, Simulation, PAID_STATUSES};
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
    /// False when the previous extract's file already holds these exact bytes
    /// (`key` is that file): an unchanged shop writes no new file.
    pub written: bool,
}

/// State key: the last existing-data CSV written (`{"key", "sha256"}`).
const LAST_EXISTING_DATA: &str = "extract.last_csv";

/// Derives the interactions of the shop mirror (nothing is written).
pub fn derive(
    store: &Store,
    key: &UserKey,
    options: ExtractOptions,
) -> Result<(Vec<OriginRows>, Extraction)> {
    let mut summary = Extraction::default();
    let catalog = Catalog::new(store.catalog()?);
    let simulation = options.simulate.then_some(Simulation {
        seed: options.seed,
        view_before: 60..=3660,
        similar_views: true,
    });
    let forgotten = store.forgotten_users()?;
    let cutoff = crate::retention::retention_cutoff(store)?.unwrap_or(i64::MIN);
    let mut batches = Vec::new();
    for order in store.orders_with_status(PAID_STATUSES)? {
        let label = format!("order {:?}", order.order_id);
        if order.created_at < cutoff {
            summary
                .skipped
                .add(label, "older than the retention cut (cleanup)");
            continue;
        }
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
        if forgotten.contains(&user_id) {
            summary
                .skipped
                .add(label, "the customer asked to be forgotten");
            continue;
        }
        let (rows, counts) = order_rows(
            &order,
            &user_id,
            order.created_at,
            Source::ExistingData,
            simulation.as_ref(),
            &catalog,
        );
        summary.purchases += counts.purchases;
        summary.views += counts.views;
        summary.similar_views += counts.similar_views;
        batches.push(rows);
    }

    let mut images = Vec::new();
    for image in store.viewed_design_images()? {
        match (image.entity_id, image.created_at) {
            (Some(_), Some(ts)) if ts < cutoff => summary.skipped.add(
                format!("image {:?}", image.id),
                "older than the retention cut (cleanup)",
            ),
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
    let sha256 = sha256_hex(&csv);
    let previous: Option<serde_json::Value> = store
        .state_get(LAST_EXISTING_DATA)?
        .and_then(|v| serde_json::from_str(&v).ok());
    if let Some(key) = previous
        .as_ref()
        .filter(|p| p["sha256"] == sha256.as_str())
        .and_then(|p| p["key"].as_str())
    {
        // Same bytes as the last file, and that file is still there: keep it.
        if objects.get(key).await.is_ok() {
            summary.export = Some(ExportedFile {
                key: key.to_owned(),
                rows,
                sha256,
                written: false,
            });
            return Ok(summary);
        }
    }
    let key = format!(
        "training-data/existing-data-{}.csv",
        manirec_store::now_ms()
    );
    objects.put(&key, Bytes::from(csv)).await?;
    store.state_set(
        LAST_EXISTING_DATA,
        &serde_json::json!({"key": key, "sha256": sha256}).to_string(),
    )?;
    summary.export = Some(ExportedFile {
        key,
        rows,
        sha256,
        written: true,
    });
    Ok(summary)
}
