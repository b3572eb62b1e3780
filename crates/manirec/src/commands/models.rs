//! `train`, `evaluate`, `models list` and `models promote`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use manirec_models::evaluate::{write_dump, Protocol};
use manirec_models::tune::TuneOptions;
use manirec_models::{Features, ModelKind, ModelSpec};
use manirec_pipeline::import::features_csv::read_item_features;
use manirec_pipeline::training::{
    self, EvaluateSummary, ModelList, Pretrain, Promotion, TrainRequest, TrainSummary,
};

use super::Context;
use crate::cli::{EvaluateArgs, ModelArg, ModelsCommand, PretrainArg, TrainArgs};

/// The metrics the tables show.
const SHOWN: [&str; 4] = ["ndcg@10", "recall@10", "recall@20", "coverage@20"];

/// The spec `args` ask for.
pub fn spec(args: &TrainArgs) -> Result<ModelSpec> {
    let kind = match args.model {
        ModelArg::Popular => ModelKind::Popular,
        ModelArg::Als => ModelKind::Als,
        ModelArg::Ease => ModelKind::Ease,
        ModelArg::TwoTower => ModelKind::TwoTower,
        ModelArg::ItemKnn => ModelKind::ItemKnn,
        ModelArg::Rp3beta => ModelKind::Rp3beta,
        ModelArg::Sr => ModelKind::Sr,
        ModelArg::Vsknn => ModelKind::Vsknn,
        ModelArg::Blend => ModelKind::Blend,
    };
    let mut spec = ModelSpec::new(kind);
    if let Some(seed) = args.seed {
        spec.als.seed = seed;
        spec.two_tower.seed = seed;
    }
    if let Some(v) = args.factors {
        spec.als.factors = v;
    }
    if let Some(v) = args.iterations {
        spec.als.iterations = v;
    }
    if let Some(v) = args.regularization {
        spec.als.regularization = v;
    }
    if let Some(v) = args.alpha {
        spec.als.alpha = v;
    }
    if let Some(v) = args.lambda {
        spec.ease.lambda = v;
    }
    if let Some(v) = args.dim {
        spec.two_tower.dim = v;
    }
    match args.epochs {
        Some(v) => spec.two_tower.epochs = v,
        // One pass continues a trained model best (see manirec_models::two_tower).
        None if args.warm_start => spec.two_tower.epochs = 1,
        None => {}
    }
    if let Some(v) = args.learning_rate {
        spec.two_tower.learning_rate = v;
    }
    if let Some(v) = args.temperature {
        spec.two_tower.temperature = v;
    }
    if let Some(v) = args.batch_size {
        spec.two_tower.batch_size = v;
    }
    if let Some(v) = args.history_dropout {
        spec.two_tower.history_dropout = v;
    }
    let s = &mut spec.session;
    if let Some(v) = args.neighbours {
        s.neighbours = v;
    }
    if let Some(v) = args.shrink {
        s.shrink = v;
    }
    if let Some(v) = args.asymmetry {
        s.asymmetry = v;
    }
    s.weighted |= args.weighted;
    if let Some(v) = args.rp3_alpha {
        s.alpha = v;
    }
    if let Some(v) = args.beta {
        s.beta = v;
    }
    if let Some(v) = args.steps {
        s.steps = v;
    }
    if let Some(v) = args.sample {
        s.sample = v;
    }
    if let Some(v) = args.recency {
        s.recency = v;
    }
    if let Some(v) = &args.blend {
        for (slot, w) in s.blend.iter_mut().zip(v) {
            *slot = *w;
        }
    }
    s.validate()?;
    Ok(spec)
}

pub async fn train(ctx: &Context, args: TrainArgs) -> Result<()> {
    let spec = spec(&args)?;
    let tune_protocol = args
        .tune_protocol
        .as_deref()
        .map(str::parse::<Protocol>)
        .transpose()?;
    let store = ctx.settings.open_store()?;
    let objects = ctx.settings.objects()?;
    let req = TrainRequest {
        spec,
        dataset: args.dataset.clone(),
        warm_start: args.warm_start,
        tune: args.tune.then(|| TuneOptions {
            seed: args.seed.unwrap_or(TuneOptions::default().seed),
            protocol: tune_protocol,
            ..TuneOptions::default()
        }),
        pretrain: match args.pretrain {
            Some(PretrainArg::Public) => Some(Pretrain {
                features: match &args.pretrain_features {
                    Some(path) => read_item_features(path)?,
                    None => Features::new(),
                },
            }),
            None => None,
        },
        accounts: match args.accounts {
            true => Some(ctx.settings.user_key()?),
            false => None,
        },
    };
    let summary = training::train(&store, &objects, &req).await?;
    if let Some(w) = &summary.warning {
        eprintln!("WARNING: {w}");
    }
    if summary
        .pretrain
        .as_ref()
        .is_some_and(|p| p.features_shared == 0)
    {
        eprintln!(
            "WARNING: the public data shares no feature with the shop's items, so \
             nothing carried over from pre-training: give its items features named \
             as the shop's with --pretrain-features, or train without --pretrain"
        );
    }
    ctx.print(&summary, || render_train(&summary))
}

fn metric(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(f64::NAN)
}

fn render_train(s: &TrainSummary) -> String {
    let mut out = format!(
        "Trained {} ({}) on dataset {} in {:.2}s -> candidate {}\n",
        s.model,
        s.warm_started_from
            .as_ref()
            .map_or_else(|| "full".to_owned(), |v| format!("warm start from {v}")),
        s.dataset,
        s.train_seconds,
        s.model_version
    );
    let _ = writeln!(
        out,
        "warm protocol, {} users: {}",
        s.users_evaluated,
        SHOWN
            .iter()
            .map(|k| format!(
                "{k} {:.4} (popularity {:.4})",
                metric(&s.metrics, k),
                metric(&s.baseline, k)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(w) = &s.warning {
        let _ = writeln!(out, "WARNING: {w}");
    }
    for (name, r) in [
        ("session", Some(&s.session)),
        ("first-visit", s.first_visit.as_ref()),
    ] {
        let Some(r) = r.filter(|r| r.users_evaluated > 0) else {
            continue;
        };
        let verdict = match r.beats_baseline {
            true => "beats popularity".to_owned(),
            false => format!(
                "does not beat popularity (lift {:+.4}..{:+.4})",
                r.ndcg10_lift_ci[0], r.ndcg10_lift_ci[1]
            ),
        };
        let _ = writeln!(
            out,
            "{name} protocol, {} users: ndcg@10 {:.4} (popularity {:.4}): {verdict}",
            r.users_evaluated,
            metric(&r.metrics, "ndcg@10"),
            metric(&r.baseline, "ndcg@10"),
        );
    }
    if let Some(p) = &s.pretrain {
        let _ = writeln!(
            out,
            "pre-trained on {} {} interactions ({} users, {} items) in {:.2}s; {} of the \
             shop's features carried over; NDCG@10 {:.4} against {:.4} trained on the shop \
             alone, difference {:+.4}..{:+.4}: {}",
            p.rows,
            p.source,
            p.users,
            p.items,
            p.pretrain_seconds,
            p.features_shared,
            metric(&s.metrics, "ndcg@10"),
            metric(&p.shop_alone, "ndcg@10"),
            p.ndcg10_gain_ci[0],
            p.ndcg10_gain_ci[1],
            if p.helped {
                "pre-training helped"
            } else {
                "no measured gain: train without --pretrain"
            }
        );
    }
    let _ = writeln!(out, "artifact {} (sha256 {})", s.artifact, &s.sha256[..16]);
    let _ = writeln!(
        out,
        "Promote it with `manirec models promote {}`.",
        s.model_version
    );
    out
}

pub async fn evaluate(ctx: &Context, args: EvaluateArgs) -> Result<()> {
    let protocol: Protocol = args.protocol.parse()?;
    let store = ctx.settings.open_store()?;
    let objects = ctx.settings.objects()?;
    let (summary, lists) =
        training::evaluate_version(&store, &objects, args.model_version.as_deref(), protocol)
            .await?;
    if let Some(path) = &args.dump {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        write_dump(std::io::BufWriter::new(file), &lists)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(w) = &summary.report.warning {
        eprintln!("WARNING: {w}");
    }
    ctx.print(&summary, || render_evaluate(&summary))
}

fn render_evaluate(e: &EvaluateSummary) -> String {
    let s = &e.report;
    let mut out = format!(
        "{} ({}, dataset {}), {:?} protocol, {} users evaluated\n",
        e.model_version, e.model, e.dataset, s.protocol, s.users_evaluated
    );
    let _ = writeln!(
        out,
        "{:<12} {:>8} {:>18} {:>10}",
        "metric", "model", "95% interval", "popular"
    );
    for (k, v) in &s.metrics {
        let ci = s.metrics_ci.get(k).copied().unwrap_or([f64::NAN; 2]);
        let _ = writeln!(
            out,
            "{k:<12} {v:>8.4} {:>18} {:>10.4}",
            format!("[{:.4}, {:.4}]", ci[0], ci[1]),
            metric(&s.baseline, k)
        );
    }
    match &s.warning {
        Some(w) => {
            let _ = writeln!(out, "\n!!! WARNING: {w} !!!");
        }
        None if s.beats_baseline => {
            let _ = writeln!(
                out,
                "Beats popularity: ndcg@10 lift interval [{:.4}, {:.4}].",
                s.ndcg10_lift_ci[0], s.ndcg10_lift_ci[1]
            );
        }
        None => {}
    }
    out
}

pub fn registry(ctx: &Context, command: ModelsCommand) -> Result<()> {
    let store = ctx.settings.open_store()?;
    match command {
        ModelsCommand::List => {
            let list = training::list(&store)?;
            ctx.print(&list, || render_list(&list))
        }
        ModelsCommand::Promote { version } => {
            let p = training::promote(&store, &version)?;
            ctx.print(&p, || render_promotion(&p))
        }
    }
}

fn render_list(list: &ModelList) -> String {
    if list.models.is_empty() {
        return "No model yet: run `manirec train --model ease`.\n".into();
    }
    let mut out = format!(
        "{:<6} {:<8} {:<8} {:<10} {:<24} {:>8} {:>10} {:>12}\n",
        "model", "kind", "dataset", "status", "created", "ndcg@10", "recall@20", "coverage@20"
    );
    for m in &list.models {
        let _ = writeln!(
            out,
            "{:<6} {:<8} {:<8} {:<10} {:<24} {:>8.4} {:>10.4} {:>12.4}",
            m.version,
            m.model,
            m.dataset,
            m.status,
            m.created_at,
            metric(&m.metrics, "ndcg@10"),
            metric(&m.metrics, "recall@20"),
            metric(&m.metrics, "coverage@20"),
        );
    }
    out
}

fn render_promotion(p: &Promotion) -> String {
    match &p.retired {
        Some(r) => format!("{} is now active; {r} retired.\n", p.model_version),
        None => format!("{} is now active.\n", p.model_version),
    }
}
