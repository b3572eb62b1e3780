//! `manirec demo`: a realistic shop, every stage that exists, end to end: generate,
//! import, extract, events, dataset build, then popular, ALS and EASE trained and
//! compared.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use anyhow::{Context as _, Result};
use manirec_demo::{generate, ShopSpec};
use manirec_models::{ModelKind, ModelSpec};
use manirec_pipeline::import::shop::import_shop;
use manirec_pipeline::sync::sync;
use manirec_pipeline::training::{self, TrainRequest, TrainSummary};
use serde::Serialize;
use serde_json::{json, Value};

use super::Context;
use crate::cli::DemoArgs;
use crate::progress::Bars;

#[derive(Serialize)]
struct DemoSummary {
    seed: u64,
    data_dir: String,
    shop_file: String,
    stages: BTreeMap<&'static str, Value>,
    /// Wall time of each stage, seconds.
    seconds: BTreeMap<&'static str, f64>,
}

pub async fn run(ctx: &Context, args: DemoArgs) -> Result<()> {
    let mut stages = BTreeMap::new();
    let mut seconds = BTreeMap::new();
    let mut human = String::new();
    let mut timed = |name: &'static str, started: Instant| {
        seconds.insert(
            name,
            (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        );
    };

    // 1. A shop: the seed's scale, history ending today (midnight UTC) so that a
    // rerun on the same day gives the same shop.
    let started = Instant::now();
    let day = 86_400;
    let now = args
        .as_of
        .unwrap_or_else(|| chrono::Utc::now().timestamp().div_euclid(day) * day);
    let shop = generate(&ShopSpec::seed_scale(args.seed, now));
    let shop_file = ctx.settings.data_dir.join("demo").join("shop.db");
    std::fs::create_dir_all(shop_file.parent().expect("has a parent"))?;
    shop.write_sqlite(&shop_file)
        .with_context(|| format!("writing the demo shop {}", shop_file.display()))?;
    let generated = json!({
        "accounts": shop.accounts.len(),
        "base_products": shop.base_products.len(),
        "end_products": shop.end_products.len(),
        "orders": shop.orders.len(),
        "images": shop.images.len(),
        "storefront_events": shop.events.len(),
    });
    let _ = writeln!(
        human,
        "1. Generated a demo shop (seed {}): {} accounts, {} base products, {} end products, \
         {} orders, {} images, {} storefront events\n   -> {}",
        args.seed,
        shop.accounts.len(),
        shop.base_products.len(),
        shop.end_products.len(),
        shop.orders.len(),
        shop.images.len(),
        shop.events.len(),
        shop_file.display()
    );
    stages.insert("generate", generated);
    timed("generate", started);

    // 2. Import the shop file into the mirror.
    let started = Instant::now();
    let mut store = ctx.settings.open_store()?;
    let imported = import_shop(
        &mut store,
        &shop_file,
        &ctx.settings.user_key()?,
        &Bars::default(),
    )?;
    let _ = writeln!(human, "\n2. Import");
    human.push_str(&indent(&super::import::render_shop(
        &shop_file.display().to_string(),
        &imported,
    )));
    stages.insert("import", serde_json::to_value(&imported)?);
    timed("import", started);

    // 3. Extract training interactions.
    let started = Instant::now();
    let extraction = super::extract::run_extract(ctx, args.seed, true).await?;
    let _ = writeln!(human, "\n3. Extract");
    human.push_str(&indent(&super::extract::render(&extraction)));
    stages.insert("extract", serde_json::to_value(&extraction)?);
    timed("extract", started);

    // 4. Four weeks of storefront behaviour, stored as the tracking endpoint stores it.
    let started = Instant::now();
    // Through the same door as the storefront's: emails hashed before they are stored.
    let key = ctx.settings.user_key()?;
    let events: Vec<_> = shop
        .events
        .iter()
        .cloned()
        .map(|mut e| {
            e.user_id = e.user_id.map(|u| key.user_id(&u));
            e
        })
        .collect();
    let (accepted, duplicates) = store.insert_events(&events)?;
    let by_type: BTreeMap<String, i64> = store.event_counts()?.into_iter().collect();
    let _ = writeln!(
        human,
        "\n4. Storefront events: {accepted} stored, {duplicates} already there (funnel: {})",
        [
            "product_view",
            "product_click",
            "add_to_cart",
            "add_to_wishlist",
            "purchase"
        ]
        .iter()
        .map(|t| format!("{t} {}", by_type.get(*t).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
    );
    stages.insert(
        "events",
        json!({"accepted": accepted, "duplicates": duplicates, "by_type": by_type}),
    );
    timed("events", started);

    // 5. Sync the events into interactions, as `serve` does every hour.
    let started = Instant::now();
    let synced = sync(&mut store, &ctx.settings.sync.weights, &Bars::default())?;
    let _ = writeln!(
        human,
        "\n5. Sync: {} events -> {} interactions (watermark {}); {} sessions/devices linked to customers, {} rows moved to them",
        synced.synced, synced.inserted, synced.watermark, synced.stitched.links, synced.stitched.moved
    );
    stages.insert("sync", serde_json::to_value(&synced)?);
    timed("sync", started);

    // 6. A dataset version: dedup, sort, 80/20 temporal split, Parquet + manifest.
    let started = Instant::now();
    let objects = ctx.settings.objects()?;
    let built = manirec_pipeline::dataset::build(
        &store,
        &objects,
        manirec_pipeline::dataset::BuildOptions::default(),
        &manirec_pipeline::NoProgress,
    )
    .await?;
    let _ = writeln!(
        human,
        "\n6. Dataset {}: {} rows, train {} / test {}",
        built.version, built.rows, built.train_rows, built.test_rows
    );
    stages.insert("dataset", serde_json::to_value(&built)?);
    timed("dataset", started);

    // 7. Train and evaluate every model on it (warm protocol, beside popularity).
    let started = Instant::now();
    let mut trained = Vec::new();
    for kind in ModelKind::ALL {
        let req = TrainRequest {
            spec: ModelSpec::new(kind),
            dataset: Some(built.version.clone()),
            warm_start: false,
            tune: None,
            pretrain: None,
            // The demo shows what accounts do (the first-visit report).
            accounts: Some(ctx.settings.user_key()?),
        };
        trained.push(training::train(&store, &objects, &req).await?);
    }
    let _ = writeln!(
        human,
        "\n7. Models (warm and session protocols, dataset {})",
        built.version
    );
    human.push_str(&indent(&comparison(&trained)));
    stages.insert(
        "train",
        json!({
            "dataset": built.version,
            "models": trained.iter().map(|t| json!({
                "model_version": t.model_version,
                "model": t.model,
                "train_seconds": t.train_seconds,
                "users_evaluated": t.users_evaluated,
                "metrics": t.metrics,
                "beats_baseline": t.beats_baseline,
                "ndcg10_lift_ci": t.ndcg10_lift_ci,
                "session": t.session,
                "first_visit": t.first_visit,
                "cold_start": t.cold_start,
            })).collect::<Vec<_>>(),
        }),
    );
    timed("train", started);

    // 8. Serve the best of them (by ndcg@10 on the warm protocol).
    if let Some(best) = trained.iter().max_by(|a, b| {
        let m = |t: &TrainSummary| t.metrics.get("ndcg@10").copied().unwrap_or(0.0);
        m(a).total_cmp(&m(b))
    }) {
        training::promote(&store, &best.model_version)?;
        let _ = writeln!(
            human,
            "\n8. Promoted {} ({}) to active: it answers /v1/recommendations",
            best.model_version, best.model
        );
        stages.insert("promoted", json!(best.model_version));
    }

    let totals = store.table_counts()?;
    let _ = writeln!(
        human,
        "\nStore {}: {} training interactions, {} behaviour events",
        manirec_store::redacted_url(&ctx.settings.database_url),
        totals["training_interactions"],
        totals["behavior_events"]
    );
    let _ = writeln!(
        human,
        "Stage times: {}",
        STAGES
            .iter()
            .filter_map(|k| seconds.get(k).map(|v| format!("{k} {v:.2}s")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let summary = DemoSummary {
        seed: args.seed,
        data_dir: ctx.settings.data_dir.display().to_string(),
        shop_file: shop_file.display().to_string(),
        stages,
        seconds,
    };
    ctx.print(&summary, || human)?;
    drop(store);
    if args.no_serve {
        return Ok(());
    }
    // Concrete examples for the curl lines: the best customer, the most
    // appealing design, the models trained.
    let customer = {
        let mut paid: BTreeMap<&str, usize> = BTreeMap::new();
        for o in shop.orders.iter().filter(|o| o.financial_status == "paid") {
            *paid.entry(o.email.as_str()).or_default() += 1;
        }
        paid.into_iter()
            .max_by_key(|(email, n)| (*n, std::cmp::Reverse(*email)))
            .map(|(email, _)| email.trim().replace('@', "%40").replace('+', "%2B"))
            .unwrap_or_default()
    };
    let design = shop
        .end_products
        .iter()
        .max_by(|a, b| a.appeal.total_cmp(&b.appeal))
        .map(|p| p.id.clone())
        .unwrap_or_default();
    let versions: Vec<String> = trained.iter().map(|t| t.model_version.clone()).collect();
    let control = summary
        .stages
        .get("promoted")
        .and_then(|v| v.as_str())
        .unwrap_or("m1")
        .to_owned();
    let treatment = versions
        .iter()
        .rev()
        .find(|v| **v != control)
        .cloned()
        .unwrap_or_else(|| "m2".into());
    let token = ctx
        .settings
        .admin_token
        .clone()
        .unwrap_or_else(|| format!("demo-{:016x}", rand::random::<u64>()));
    let data_dir = ctx.settings.data_dir.display().to_string();
    // What the shop's theme would put in the page: the customer's token for a day.
    let user_token = manirec_server::shopper::sign(
        &ctx.settings.storefront_secret()?,
        &customer.replace("%40", "@").replace("%2B", "+"),
        manirec_store::now_ms() / 1000 + 86_400,
    );
    super::live::serve_then(ctx, &args.addr, Some(token.clone()), |addr| {
        let a = format!("curl -s -H 'Authorization: Bearer {token}'");
        eprintln!(
            "\nServing the demo shop on http://{addr} (Ctrl-C to stop). Try:\n\
             \x20 # a customer (their email, hashed as in training; the token is what the theme signs): bought items never come back\n\
             \x20 curl -s 'http://{addr}/v1/recommendations?user_id={customer}&user_token={user_token}&k=5'\n\
             \x20 # a new visitor views a design, and at once gets related designs\n\
             \x20 curl -s -X POST http://{addr}/v1/events -d '[{{\"event_id\":\"try-1\",\"event_type\":\"product_view\",\"product_id\":\"{design}\",\"session_id\":\"s-try\",\"timestamp\":'$(date +%s000)'}}]'\n\
             \x20 curl -s 'http://{addr}/v1/recommendations?session_id=s-try&k=5'\n\
             \x20 curl -s 'http://{addr}/v1/items/{design}/similar?k=5'\n\
             \x20 curl -s 'http://{addr}/v1/popular?k=5'\n\
             \x20 # an A/B test, the weekly loop, the dashboard (admin token of this run: {token})\n\
             \x20 {a} -X POST http://{addr}/admin/experiments -d '{{\"control\":\"{control}\",\"treatment\":\"{treatment}\",\"traffic\":50}}' -H 'content-type: application/json'\n\
             \x20 {a} http://{addr}/admin/experiments/1\n\
             \x20 {a} -X POST http://{addr}/admin/retrain\n\
             \x20 open http://{addr}/dashboard\n\
             \x20 curl -s http://{addr}/metrics | grep manirec_events\n\
             \x20 manirec --data-dir {data_dir} experiment status\n\
             Webhooks need MANIREC_SHOPLAZZA_SECRET (then POST /webhooks/shoplazza, signed)."
        );
    })
    .await
}

/// The stages, in the order they run.
const STAGES: &[&str] = &[
    "generate", "import", "extract", "events", "sync", "dataset", "train",
];

/// The comparison table of the trained models.
fn comparison(trained: &[TrainSummary]) -> String {
    // A model is called better than popularity only where the interval of its
    // NDCG@10 lift (paired bootstrap) lies above zero; otherwise the interval
    // is shown, since a small shop's test part often cannot tell.
    let verdict = |beats: bool, ci: [f64; 2]| {
        if beats {
            "beats popular".to_owned()
        } else {
            format!("undecided [{:+.3}, {:+.3}]", ci[0], ci[1])
        }
    };
    let mut out = format!(
        "{:<9} {:<8} {:>9} {:<26} {:>9} {:<26} {:>8}\n",
        "model",
        "version",
        "warm",
        "vs popular (warm)",
        "session",
        "vs popular (session)",
        "train s"
    );
    let m = |v: &BTreeMap<String, f64>, k: &str| v.get(k).copied().unwrap_or(f64::NAN);
    for t in trained {
        let popular = t.model == "popular";
        let _ = writeln!(
            out,
            "{:<9} {:<8} {:>9.4} {:<26} {:>9.4} {:<26} {:>8.3}",
            t.model,
            t.model_version,
            m(&t.metrics, "ndcg@10"),
            if popular {
                "-".to_owned()
            } else {
                verdict(t.beats_baseline, t.ndcg10_lift_ci)
            },
            m(&t.session.metrics, "ndcg@10"),
            if popular {
                "-".to_owned()
            } else {
                verdict(t.session.beats_baseline, t.session.ndcg10_lift_ci)
            },
            t.train_seconds
        );
    }
    if let Some(t) = trained.first() {
        let _ = writeln!(
            out,
            "(NDCG@10; warm: {} users evaluated, session: {} visitors)",
            t.users_evaluated, t.session.users_evaluated
        );
    }
    for t in trained {
        if let Some(f) = t.first_visit.as_ref().filter(|f| f.users_evaluated > 0) {
            let _ = writeln!(
                out,
                "First visits (new customers, from their account alone, {} customers): {} ndcg@10 {:.4}, popularity {:.4} ({})",
                f.users_evaluated,
                t.model,
                m(&f.metrics, "ndcg@10"),
                m(&f.baseline, "ndcg@10"),
                verdict(f.beats_baseline, f.ndcg10_lift_ci)
            );
        }
        if let Some(c) = t.cold_start.as_ref().filter(|c| c.interactions > 0) {
            let _ = writeln!(
                out,
                "New designs (no history in train, {} test interactions): {} hit_rate@20 {:.3}, per-category popularity {:.3}",
                c.interactions, t.model, c.hit_rate_20, c.baseline_hit_rate_20
            );
        }
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}
