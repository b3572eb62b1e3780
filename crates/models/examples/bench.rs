//! Benchmarks of manirec's models (not tests: they read public data sets by path).
//!
//! What it measures:
//! - `quality`: MovieLens 100K (`u.data`) and latest-small (`ratings.csv`), split
//!   by the contract's rules (5-minute dedup, time order, 80/20), every model
//!   (popular, ALS, EASE) under both protocols (`warm`, `session`): the seven
//!   metrics with 95 % bootstrap intervals over users, beside popularity, and
//!   training time. `--dump DIR` writes each model's ranked lists and the split
//!   (for `scripts/recompute_metrics.py` and `scripts/anchors.py`).
//! - `sweep`: hyper-parameter curves on those data sets (warm NDCG@10).
//! - `scale`: ALS on a generated 5-million-interaction set (64 factors, 15
//!   iterations, 2 threads): wall time and warm quality, next to the `implicit`
//!   library run by `scripts/anchors.py` in the same process tree, and warm start
//!   vs full retrain.
//! - `two-tower`: the two-tower model on MovieLens 100K (warm and session) beside
//!   popularity and ALS with training times; `--genres 1` (genres as item
//!   features, and the cold-start report), `--pretrain 1` (pre-trained on
//!   latest-small, fine-tuned on 100K), `--tune 1` (the validation search),
//!   `--warm-start 1` (warm start vs full
//!   retrain), `--tfrs scripts/anchor_tfrs.py` (TensorFlow Recommenders on the same
//!   split, with `ANCHOR_PYTHON` naming a Python that has it), `--dim --epochs
//!   --batch --lr --temperature --logq --user-dropout --item-dropout --history`.
//!
//! - `sessions`: every model (popular, ALS, EASE, item-kNN, RP3beta, SR, V-SKNN;
//!   two-tower with `--two-tower 1`) under both protocols on MovieLens 100K,
//!   latest-small, a generated shop log and a generated session log (visitors
//!   walking between related designs), each tuned by `tune` on the protocol it is
//!   scored on, beside the anchors of `scripts/anchors.py` run in the same process
//!   tree (numpy EASE, implicit's item-kNN, the papers' SR and V-SKNN written in
//!   Python) scored by the same code; prints the best manirec model over the best
//!   anchor per data set and protocol. `--dump DIR` keeps splits and lists for
//!   `scripts/recompute_metrics.py`; `--only NAME` runs one data set, `--kinds
//!   a,b` only those kinds (and popularity), `--protocol warm|session` one protocol, `--trials N` the search's budget.
//! - `catalogue`: the sparse session models and EASE (the sparse solve above
//!   20 000 items) trained on 100 000 items (wall time, peak memory, artifact);
//!   `--kinds a,b` only those, `--neighbours K` EASE's neighbourhood.
//! - `sparse-ease`: sparse EASE (`--neighbours 50,100,…`) beside dense EASE at
//!   the same `--lambda` on the public data sets, both protocols.
//! - `accounts`: a customer's first visit (the `first_visit` protocol: new
//!   customers scored from their account alone), and `session` and `warm`, for
//!   the two-tower model with and without account features, beside popularity
//!   and "popular among customers who share a feature" (computed here, not by
//!   model code): MovieLens 100K (`u.user`: age, gender, occupation, first zip
//!   digit; genres as item features) and the Olist sample (`customers.csv`:
//!   state; categories as item features; a user is `customer_unique_id`).
//! - `dedup`: the 5-minute dedup keeping the strongest row (the contract's)
//!   beside the older rule keeping the latest, on the generated shop and session
//!   logs: rows removed, cart/purchase rows kept, and every model (defaults) on
//!   both protocols.
//!
//! The data sets' licence forbids redistribution: they are read from
//! `/work/shared/data` (or `--data DIR`) and never copied into the repository.
//! Run with `cargo run --release -p manirec-models --example bench -- quality`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use manirec_models::evaluate::{
    cases, evaluate, score_ranked, write_dump, EvalOptions, Protocol, RankedList, Report, Scores,
    METRIC_KEYS,
};
use manirec_models::tune::{tune, TuneOptions};
use manirec_models::{
    temporal_split, train, Als, Features, Interaction, Interactions, Model, ModelKind, ModelSpec,
    Split,
};

fn read_ml100k(path: &Path) -> Vec<Interaction> {
    let f = BufReader::new(File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    f.lines()
        .map(|l| {
            let l = l.unwrap();
            let p: Vec<&str> = l.split('\t').collect();
            Interaction::rating(p[0], p[1], p[2].parse().unwrap(), p[3].parse().unwrap())
        })
        .collect()
}

fn read_latest(path: &Path) -> Vec<Interaction> {
    let f = BufReader::new(File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    f.lines()
        .skip(1)
        .map(|l| {
            let l = l.unwrap();
            let p: Vec<&str> = l.split(',').collect();
            Interaction::rating(p[0], p[1], p[2].parse().unwrap(), p[3].parse().unwrap())
        })
        .collect()
}

struct Args {
    cmd: String,
    data: PathBuf,
    dump: Option<PathBuf>,
    rest: HashMap<String, String>,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_else(|| "quality".into());
    let mut a = Args {
        cmd,
        data: PathBuf::from("/work/shared/data"),
        dump: None,
        rest: HashMap::new(),
    };
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--data" => a.data = v.into(),
            "--dump" => a.dump = Some(v.into()),
            _ => {
                a.rest.insert(k.trim_start_matches("--").to_string(), v);
            }
        }
    }
    a
}

fn datasets(a: &Args) -> Vec<(&'static str, Split)> {
    let mut out = Vec::new();
    let ml = a.data.join("ml-100k/u.data");
    if ml.exists() {
        out.push(("ml-100k", temporal_split(read_ml100k(&ml), 0.8)));
    }
    let ls = a.data.join("ml-latest-small/ratings.csv");
    if ls.exists() {
        out.push(("ml-latest-small", temporal_split(read_latest(&ls), 0.8)));
    }
    out
}

/// The settings this benchmark reports: each kind's defaults, then what `tune`
/// finds on a validation split cut from train (so no test row leaks into a choice).
fn specs(split: &Split) -> Vec<(String, ModelSpec)> {
    let mut out = vec![
        ("popular".to_string(), ModelSpec::new(ModelKind::Popular)),
        ("als".to_string(), ModelSpec::new(ModelKind::Als)),
        ("ease".to_string(), ModelSpec::new(ModelKind::Ease)),
    ];
    for kind in [ModelKind::Als, ModelKind::Ease] {
        let t = Instant::now();
        let r = tune(
            &split.train,
            &ModelSpec::new(kind),
            None,
            &TuneOptions::default(),
        )
        .unwrap();
        let label = match kind {
            ModelKind::Als => format!(
                "als tuned (reg {}, alpha {}, half-life {:?} d)",
                r.best.als.regularization, r.best.als.alpha, r.best.signal.half_life_days
            ),
            _ => format!(
                "ease tuned (lambda {}, half-life {:?} d)",
                r.best.ease.lambda, r.best.signal.half_life_days
            ),
        };
        eprintln!(
            "tune {kind}: {} trials in {:.1}s, validation ndcg@10 {:.4}",
            r.trials.len(),
            t.elapsed().as_secs_f64(),
            r.best_ndcg10
        );
        out.push((label, r.best));
    }
    out
}

fn fmt_metric(r: &Report, key: &str) -> String {
    let m = r.metrics[key];
    let ci = r.metrics_ci[key];
    format!("{m:.4} [{:.4}, {:.4}]", ci[0], ci[1])
}

fn print_report(dataset: &str, label: &str, secs: f64, r: &Report) {
    let mut line = format!(
        "| {dataset} | {:?} | {label} | {} | {secs:.2} |",
        r.protocol, r.users_evaluated
    );
    for k in METRIC_KEYS {
        line.push_str(&format!(" {} |", fmt_metric(r, k)));
    }
    line.push_str(&format!(
        " [{:.4}, {:.4}] |",
        r.ndcg10_lift_ci[0], r.ndcg10_lift_ci[1]
    ));
    println!("{line}");
}

fn header() {
    let mut h = "| data | protocol | model | users | train s |".to_string();
    for k in METRIC_KEYS {
        h.push_str(&format!(" {k} |"));
    }
    h.push_str(" ndcg@10 lift vs popular |");
    println!("{h}");
    println!("|{}", "---|".repeat(6 + METRIC_KEYS.len()));
}

fn write_split(dir: &Path, name: &str, split: &Split) {
    std::fs::create_dir_all(dir).unwrap();
    for (part, rows) in [("train", &split.train), ("test", &split.test)] {
        let mut w = BufWriter::new(File::create(dir.join(format!("{name}.{part}.tsv"))).unwrap());
        for r in rows {
            writeln!(
                w,
                "{}\t{}\t{}\t{}",
                r.user_id, r.item_id, r.weight, r.timestamp
            )
            .unwrap();
        }
    }
}

/// Runs an anchor script (`scripts/anchors.py`, `scripts/anchor_tfrs.py`) with the
/// Python of `ANCHOR_PYTHON` (default `python3`; a virtual environment's for
/// TensorFlow), OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset; returns its JSON
/// summary and ranked lists.
fn run_anchor(script: &Path, args: &[String]) -> (serde_json::Value, Vec<RankedList>) {
    let out_idx = args.iter().position(|x| x == "--out").expect("--out") + 1;
    let python = std::env::var("ANCHOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .expect("python3 runs");
    if !out.status.success() {
        panic!("anchor failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("anchor prints JSON");
    let lists = BufReader::new(File::open(&args[out_idx]).unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    (info, lists)
}

fn print_scores(dataset: &str, label: &str, users: usize, secs: f64, s: &Scores) {
    let mut line = format!("| {dataset} | Warm | {label} | {users} | {secs:.2} |");
    for k in METRIC_KEYS {
        line.push_str(&format!(
            " {:.4} [{:.4}, {:.4}] |",
            s.metrics[k], s.metrics_ci[k][0], s.metrics_ci[k][1]
        ));
    }
    line.push_str(" |");
    println!("{line}");
}

fn quality(a: &Args) {
    let opts = EvalOptions::default();
    header();
    for (name, split) in datasets(a) {
        let tmp = a
            .dump
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("manirec-bench"));
        write_split(&tmp, name, &split);
        if let Some(script) = a.rest.get("anchors") {
            let baseline = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
            let cs = cases(&split.train, &split.test, Protocol::Warm, baseline.items());
            let f = |part: &str| tmp.join(format!("{name}.{part}")).display().to_string();
            let mut runs = vec![(
                "numpy EASE (lambda 3000, f64)".to_string(),
                vec!["ease".into(), "--lambda".into(), "3000".into()],
            )];
            for (reg, alpha) in [(10.0, 2.0), (100.0, 1.0)] {
                runs.push((
                    format!("implicit ALS (reg {reg}, alpha {alpha})"),
                    vec![
                        "implicit".into(),
                        "--regularization".into(),
                        format!("{reg}"),
                        "--alpha".into(),
                        format!("{alpha}"),
                        "--threads".into(),
                        "2".into(),
                    ],
                ));
            }
            for (label, mut args) in runs {
                args.extend([
                    "--train".into(),
                    f("train.tsv"),
                    "--test".into(),
                    f("test.tsv"),
                    "--out".into(),
                    f("anchor.jsonl"),
                ]);
                let (info, lists) = run_anchor(Path::new(script), &args);
                let s = score_ranked(&lists, &cs, baseline.items(), &opts);
                print_scores(
                    name,
                    &label,
                    cs.len(),
                    info["train_seconds"].as_f64().unwrap_or(f64::NAN),
                    &s,
                );
            }
        }
        let baseline = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
        for (label, spec) in specs(&split) {
            let t = Instant::now();
            let model = train(&split.train, &spec, None).unwrap();
            let secs = t.elapsed().as_secs_f64();
            for protocol in [Protocol::Warm, Protocol::Session] {
                let (r, lists) = evaluate(
                    &model,
                    &baseline,
                    &split.train,
                    &split.test,
                    protocol,
                    &opts,
                )
                .unwrap();
                print_report(name, &label, secs, &r);
                if let Some(dir) = &a.dump {
                    let f = File::create(
                        dir.join(format!("{name}.{label}.{:?}.jsonl", protocol).to_lowercase()),
                    )
                    .unwrap();
                    write_dump(BufWriter::new(f), &lists).unwrap();
                }
            }
        }
    }
}

/// Warm NDCG@10 and Recall@20 along each hyper-parameter, printed as curves.
fn sweep(a: &Args) {
    let opts = EvalOptions {
        bootstrap: 0,
        seed: 0,
    };
    let only = a.rest.get("model").cloned().unwrap_or_default();
    for (name, split) in datasets(a) {
        let baseline = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
        let run = |label: String, spec: &ModelSpec| {
            let t = Instant::now();
            let model = train(&split.train, spec, None).unwrap();
            let secs = t.elapsed().as_secs_f64();
            let (w, _) = evaluate(
                &model,
                &baseline,
                &split.train,
                &split.test,
                Protocol::Warm,
                &opts,
            )
            .unwrap();
            let (s, _) = evaluate(
                &model,
                &baseline,
                &split.train,
                &split.test,
                Protocol::Session,
                &opts,
            )
            .unwrap();
            println!(
                "{name}\t{label}\twarm ndcg@10 {:.4} recall@20 {:.4}\tsession ndcg@10 {:.4}\t{secs:.2}s",
                w.metrics["ndcg@10"], w.metrics["recall@20"], s.metrics["ndcg@10"]
            );
        };
        if only.is_empty() || only == "ease" {
            for lambda in [
                50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 3000.0, 5000.0, 10000.0, 20000.0,
            ] {
                let mut spec = ModelSpec::new(ModelKind::Ease);
                spec.ease.lambda = lambda;
                run(format!("ease lambda={lambda}"), &spec);
            }
        }
        if only.is_empty() || only == "als" {
            for reg in [0.1f32, 1.0, 10.0, 30.0, 100.0, 300.0] {
                for alpha in [0.3f32, 1.0, 3.0, 10.0] {
                    let mut spec = ModelSpec::new(ModelKind::Als);
                    spec.als.regularization = reg;
                    spec.als.alpha = alpha;
                    run(format!("als reg={reg} alpha={alpha}"), &spec);
                }
            }
        }
        if only.is_empty() || only == "signal" {
            for hl in [None, Some(30.0), Some(90.0), Some(365.0)] {
                for (kind, p) in [
                    (ModelKind::Ease, 3000.0f32),
                    (ModelKind::Als, 40.0),
                    (ModelKind::Als, 100.0),
                ] {
                    let mut spec = ModelSpec::new(kind);
                    spec.signal.half_life_days = hl;
                    spec.ease.lambda = p;
                    spec.als.regularization = p;
                    spec.als.alpha = 1.0;
                    run(format!("{kind} {p} half_life={hl:?}"), &spec);
                }
            }
            for factors in [32usize, 128] {
                let mut spec = ModelSpec::new(ModelKind::Als);
                spec.als.factors = factors;
                spec.als.regularization = 40.0;
                spec.als.alpha = 1.0;
                run(format!("als factors={factors} reg 40 alpha 1"), &spec);
            }
        }
        if only.is_empty() || only == "popular" {
            for (weighted, hl) in [
                (false, None),
                (true, None),
                (false, Some(30.0)),
                (false, Some(180.0)),
            ] {
                let mut spec = ModelSpec::new(ModelKind::Popular);
                spec.popular.weighted = weighted;
                spec.popular.half_life_days = hl;
                run(
                    format!("popular weighted={weighted} half_life={hl:?}"),
                    &spec,
                );
            }
        }
    }
}

/// Peak resident memory of this process so far, MiB (Linux).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A shop-like implicit data set: `users` with Zipf-like activity, `items` in
/// taste groups with Zipf-like appeal; 70 % of a user's events fall in their
/// group. Weights: view 1 (80 %), cart 3 (15 %), purchase 5 (5 %); 6 s apart.
fn generate(rows: usize, users: usize, items: usize, groups: usize, seed: u64) -> Vec<Interaction> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let cdf = |n: usize, s: f64| -> Vec<f64> {
        let mut acc = 0.0;
        (0..n)
            .map(|r| {
                acc += 1.0 / ((r + 10) as f64).powf(s);
                acc
            })
            .collect()
    };
    let draw = |cdf: &[f64], u: f64| {
        cdf.partition_point(|&c| c < u * cdf[cdf.len() - 1])
            .min(cdf.len() - 1)
    };
    let user_cdf = cdf(users, 0.6);
    let item_cdf = cdf(items, 0.8);
    let per_group = items / groups;
    let group_cdf = cdf(per_group, 0.8);
    // Appeal rank -> item id, shuffled so that groups mix popular and rare items.
    let mut perm: Vec<usize> = (0..items).collect();
    for i in (1..items).rev() {
        perm.swap(i, rng.random_range(0..=i));
    }
    let mut out = Vec::with_capacity(rows);
    for r in 0..rows {
        let u = draw(&user_cdf, rng.random());
        let g = u % groups;
        let item = if rng.random::<f64>() < 0.7 {
            g * per_group + draw(&group_cdf, rng.random())
        } else {
            perm[draw(&item_cdf, rng.random())]
        };
        let x: f64 = rng.random();
        let (w, kind) = if x < 0.8 {
            (1.0, "view")
        } else if x < 0.95 {
            (3.0, "add_to_cart")
        } else {
            (5.0, "purchase")
        };
        let mut row = Interaction::rating(
            format!("u{u}"),
            format!("i{item}"),
            w,
            1_700_000_000 + 6 * r as i64,
        );
        row.interaction_type = kind.into();
        out.push(row);
    }
    out
}

/// ALS at scale beside `implicit`, and warm start beside a full retrain.
fn scale(a: &Args) {
    use rand::{Rng, SeedableRng};
    let rows: usize = a.rest.get("rows").map_or(5_000_000, |v| v.parse().unwrap());
    let threads: usize = a.rest.get("threads").map_or(2, |v| v.parse().unwrap());
    let eval_users: usize = a
        .rest
        .get("eval-users")
        .map_or(10_000, |v| v.parse().unwrap());
    let mut spec = ModelSpec::new(ModelKind::Als);
    spec.als.factors = 64;
    spec.als.iterations = 15;
    spec.als.threads = Some(threads);
    if let Some(v) = a.rest.get("reg") {
        spec.als.regularization = v.parse().unwrap();
    }
    if let Some(v) = a.rest.get("alpha") {
        spec.als.alpha = v.parse().unwrap();
    }
    let t = Instant::now();
    let all = generate(rows, rows / 50, 20_000, 100, 7);
    let mut split = temporal_split(all, 0.8);
    eprintln!(
        "generated and split {rows} rows in {:.1}s (train {}, test {})",
        t.elapsed().as_secs_f64(),
        split.train.len(),
        split.test.len()
    );
    // Score a seeded sample of test users (both libraries score the same ones).
    let mut users: Vec<String> = split.test.iter().map(|r| r.user_id.clone()).collect();
    users.sort();
    users.dedup();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for i in (1..users.len()).rev() {
        users.swap(i, rng.random_range(0..=i));
    }
    users.truncate(eval_users);
    let keep: std::collections::HashSet<String> = users.into_iter().collect();
    split.test.retain(|r| keep.contains(&r.user_id));
    let tmp = a
        .dump
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("manirec-bench"));
    write_split(&tmp, "synthetic-5m", &split);
    let opts = EvalOptions::default();

    let t = Instant::now();
    let data = Interactions::build(&split.train, &spec.signal).unwrap();
    let build_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let als = Als::fit(&data, &spec.als).unwrap();
    let fit_s = t.elapsed().as_secs_f64();
    drop(als);
    let model = Model::fit(&split.train, &data, &spec, None).unwrap();
    let baseline = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    let (r, _) = evaluate(
        &model,
        &baseline,
        &split.train,
        &split.test,
        Protocol::Warm,
        &opts,
    )
    .unwrap();
    println!(
        "rows {rows}, train {} ({} users x {} items, {} nonzeros), threads {threads}",
        split.train.len(),
        data.users.len(),
        data.items.len(),
        data.nnz()
    );
    header();
    print_report(
        "synthetic-5m",
        &format!("manirec ALS: fit {fit_s:.2}s (+{build_s:.2}s matrix)"),
        fit_s,
        &r,
    );
    if let Some(script) = a.rest.get("anchors") {
        let f = |part: &str| {
            tmp.join(format!("synthetic-5m.{part}"))
                .display()
                .to_string()
        };
        let args: Vec<String> = vec![
            "implicit".into(),
            "--factors".into(),
            "64".into(),
            "--iterations".into(),
            "15".into(),
            "--regularization".into(),
            spec.als.regularization.to_string(),
            "--alpha".into(),
            spec.als.alpha.to_string(),
            "--threads".into(),
            threads.to_string(),
            "--train".into(),
            f("train.tsv"),
            "--test".into(),
            f("test.tsv"),
            "--out".into(),
            f("anchor.jsonl"),
        ];
        let (info, lists) = run_anchor(Path::new(script), &args);
        let cs = cases(&split.train, &split.test, Protocol::Warm, model.items());
        let s = score_ranked(&lists, &cs, model.items(), &opts);
        let secs = info["train_seconds"].as_f64().unwrap();
        print_scores(
            "synthetic-5m",
            &format!("implicit {} ALS: fit {secs:.2}s", info["version"]),
            cs.len(),
            secs,
            &s,
        );
        println!("\nALS fit time manirec / implicit = {:.2} ({fit_s:.2}s / {secs:.2}s); implicit peak RSS {} MiB; blas {}", fit_s / secs, info["peak_rss_mib"], info["blas"]);
    }
    // Warm start: the previous model saw the first 90 % of train.
    let cut = split.train.len() * 9 / 10;
    let old = train(&split.train[..cut], &spec, None).unwrap();
    for iters in [2usize, 5] {
        let mut ws = spec;
        ws.als.iterations = iters;
        let t = Instant::now();
        let warm = Model::warm_start(&old, &split.train, &ws, None).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let (r, _) = evaluate(
            &warm,
            &baseline,
            &split.train,
            &split.test,
            Protocol::Warm,
            &opts,
        )
        .unwrap();
        print_report(
            "synthetic-5m",
            &format!("warm start, {iters} iterations"),
            secs,
            &r,
        );
    }
    println!(
        "\npeak RSS of the benchmark process: {:.0} MiB",
        peak_rss_mib()
    );
}

fn main() {
    let a = args();
    match a.cmd.as_str() {
        "quality" => quality(&a),
        "sweep" => sweep(&a),
        "scale" => scale(&a),
        "two-tower" => two_tower(&a),
        "sessions" => sessions(&a),
        "catalogue" => catalogue(&a),
        "sparse-ease" => sparse_ease(&a),
        "dedup" => dedup(&a),
        "accounts" => accounts(&a),
        other => panic!(
            "unknown command {other}: quality | sweep | scale | two-tower | sessions | catalogue | sparse-ease | dedup | accounts"
        ),
    }
}

/// MovieLens 100K's genres (`u.item`'s 19 flags, named by `u.genre`) as `genre=…` features.
fn ml100k_genres(dir: &Path) -> Features {
    let read = |name: &str| -> Vec<String> {
        let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        // u.item is Latin-1; only ids and flags are read.
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let names: Vec<String> = read("u.genre")
        .iter()
        .filter_map(|l| l.split('|').next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    let mut f = Features::new();
    for l in read("u.item") {
        let p: Vec<&str> = l.split('|').collect();
        if p.len() < 5 + names.len() {
            continue;
        }
        let flags = &p[p.len() - names.len()..];
        for (n, flag) in names.iter().zip(flags) {
            if *flag == "1" {
                f.insert(p[0], "genre", n);
            }
        }
    }
    f
}

/// MovieLens latest-small's genres (`movies.csv`), named as ML-100K's.
fn latest_genres(path: &Path) -> Features {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut f = Features::new();
    for l in text.lines().skip(1) {
        // movieId,title (maybe quoted, with commas),genres: the genres are last.
        let (Some((id, _)), Some((_, genres))) = (l.split_once(','), l.rsplit_once(',')) else {
            continue;
        };
        for g in genres.split('|').filter(|g| !g.starts_with('(')) {
            let g = if g == "Children" { "Children's" } else { g };
            f.insert(id, "genre", g);
        }
    }
    f
}

/// The two-tower spec from `--dim --epochs --batch --lr --temperature --logq
/// --user-dropout --item-dropout --history --seed --threads`.
fn two_tower_spec(a: &Args) -> ModelSpec {
    let mut spec = ModelSpec::new(ModelKind::TwoTower);
    let t = &mut spec.two_tower;
    let get = |k: &str| a.rest.get(k).map(|v| v.parse::<f64>().unwrap());
    if let Some(v) = get("dim") {
        t.dim = v as usize;
    }
    if let Some(v) = get("epochs") {
        t.epochs = v as usize;
    }
    if let Some(v) = get("batch") {
        t.batch_size = v as usize;
    }
    if let Some(v) = get("lr") {
        t.learning_rate = v as f32;
    }
    if let Some(v) = get("temperature") {
        t.temperature = v as f32;
    }
    if let Some(v) = get("logq") {
        t.logq = v as f32;
    }
    if let Some(v) = get("user-dropout") {
        t.user_dropout = v as f32;
    }
    if let Some(v) = get("item-dropout") {
        t.item_id_dropout = v as f32;
    }
    if let Some(v) = get("account-dropout") {
        t.account_dropout = v as f32;
    }
    if let Some(v) = get("history-dropout") {
        t.history_dropout = v as f32;
    }
    if let Some(v) = get("history") {
        t.history_len = v as usize;
    }
    if let Some(v) = get("seed") {
        t.seed = v as u64;
    }
    if let Some(v) = get("threads") {
        t.threads = Some(v as usize);
    }
    spec
}

/// The two-tower model on MovieLens 100K (`warm` and `session`), beside
/// popularity and ALS, with training times; `--genres 1` adds the genres as item
/// features; `--tfrs SCRIPT` runs the TensorFlow Recommenders anchor on the same
/// split files; `--warm-start 1` compares warm start with a full retrain.
fn two_tower(a: &Args) {
    let opts = EvalOptions::default();
    let dir = a.data.join("ml-100k");
    let split = temporal_split(read_ml100k(&dir.join("u.data")), 0.8);
    let features =
        (a.rest.get("genres").map(String::as_str) == Some("1")).then(|| ml100k_genres(&dir));
    let name = "ml-100k";
    header();
    let baseline = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    if let Some(script) = a.rest.get("tfrs") {
        let tmp = a
            .dump
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("manirec-bench"));
        write_split(&tmp, name, &split);
        let f = |part: &str| tmp.join(format!("{name}.{part}")).display().to_string();
        let args = vec![
            "--train".into(),
            f("train.tsv"),
            "--test".into(),
            f("test.tsv"),
            "--out".into(),
            f("tfrs.jsonl"),
        ];
        // TensorFlow may not install (no wheel for this Python, no network): the
        // anchor is then skipped, loudly, and the rest still runs.
        let (info, lists) = match std::panic::catch_unwind(|| run_anchor(Path::new(script), &args))
        {
            Ok(r) => r,
            Err(_) => {
                eprintln!("TFRS anchor skipped: it failed (is TensorFlow Recommenders installed in ANCHOR_PYTHON?)");
                (serde_json::Value::Null, Vec::new())
            }
        };
        if !info.is_null() {
            let cs = cases(&split.train, &split.test, Protocol::Warm, baseline.items());
            let s = score_ranked(&lists, &cs, baseline.items(), &opts);
            print_scores(
                name,
                "TFRS two-tower (dim 64, 3 epochs, Adagrad)",
                cs.len(),
                info["train_seconds"].as_f64().unwrap_or(f64::NAN),
                &s,
            );
        }
    }
    let tt = two_tower_spec(a);
    let c = tt.two_tower;
    let label = format!(
        "two-tower (dim {}, {} epochs, batch {}, lr {}, T {}, logq {}{})",
        c.dim,
        c.epochs,
        c.batch_size,
        c.learning_rate,
        c.temperature,
        c.logq,
        if features.is_some() { ", genres" } else { "" }
    );
    let mut runs = vec![(label, tt)];
    if a.rest.get("tune").map(String::as_str) == Some("1") {
        // The search sees a validation split cut from train, never the test part.
        let t = Instant::now();
        let r = tune(
            &split.train,
            &tt,
            features.as_ref(),
            &TuneOptions::default(),
        )
        .unwrap();
        let b = r.best.two_tower;
        eprintln!(
            "tune two-tower: {} trials in {:.1}s, validation ndcg@10 {:.4}",
            r.trials.len(),
            t.elapsed().as_secs_f64(),
            r.best_ndcg10
        );
        for t in &r.trials {
            eprintln!(
                "  T {} lr {}: validation ndcg@10 {:.4}",
                t.spec.two_tower.temperature, t.spec.two_tower.learning_rate, t.ndcg10
            );
        }
        runs.push((
            format!(
                "two-tower tuned (T {}, lr {})",
                b.temperature, b.learning_rate
            ),
            r.best,
        ));
    }
    if a.rest.get("only").map(String::as_str) != Some("two-tower") {
        runs.insert(0, ("als".to_string(), ModelSpec::new(ModelKind::Als)));
        runs.insert(
            0,
            ("popular".to_string(), ModelSpec::new(ModelKind::Popular)),
        );
    }
    for (label, spec) in &runs {
        let t = Instant::now();
        let model = train(&split.train, spec, features.as_ref()).unwrap();
        let secs = t.elapsed().as_secs_f64();
        for protocol in [Protocol::Warm, Protocol::Session] {
            let (r, _) = evaluate(
                &model,
                &baseline,
                &split.train,
                &split.test,
                protocol,
                &opts,
            )
            .unwrap();
            print_report(name, label, secs, &r);
        }
        if let Some(f) = &features {
            if let Some(c) =
                manirec_models::evaluate::cold_start(&model, &split.train, &split.test, f)
            {
                println!(
                    "cold start ({label}): {}",
                    serde_json::to_string(&c).unwrap()
                );
            }
        }
    }
    if a.rest.get("pretrain").map(String::as_str) == Some("1") {
        // Pre-train on MovieLens latest-small (its own users and movies: only the
        // genres are shared), fine-tune on ML-100K; beside training from scratch.
        let small = a.data.join("ml-latest-small");
        let pre_rows = read_latest(&small.join("ratings.csv"));
        let pre_features = latest_genres(&small.join("movies.csv"));
        let t = Instant::now();
        let pre = train(&pre_rows, &tt, Some(&pre_features)).unwrap();
        let pre_secs = t.elapsed().as_secs_f64();
        let f = features.clone().unwrap_or_else(|| ml100k_genres(&dir));
        for epochs in [1usize, 3, tt.two_tower.epochs] {
            let mut spec = tt;
            spec.two_tower.epochs = epochs;
            let t = Instant::now();
            let model = Model::fine_tune(&pre, &split.train, &spec, Some(&f)).unwrap();
            let secs = t.elapsed().as_secs_f64();
            let label = format!("two-tower fine-tuned {epochs} epochs (pre-trained on latest-small, {pre_secs:.1} s)");
            for protocol in [Protocol::Warm, Protocol::Session] {
                let (r, _) = evaluate(
                    &model,
                    &baseline,
                    &split.train,
                    &split.test,
                    protocol,
                    &opts,
                )
                .unwrap();
                print_report(name, &label, secs, &r);
            }
            if let Some(c) =
                manirec_models::evaluate::cold_start(&model, &split.train, &split.test, &f)
            {
                println!(
                    "cold start ({label}): {}",
                    serde_json::to_string(&c).unwrap()
                );
            }
        }
    }
    if a.rest.get("warm-start").map(String::as_str) == Some("1") {
        // The older model saw the first 90 % of train; warm start and a full
        // retrain both see all of it.
        let cut = split.train.len() * 9 / 10;
        let old_rows = &split.train[..cut];
        let t = Instant::now();
        let old = train(old_rows, &tt, features.as_ref()).unwrap();
        let old_secs = t.elapsed().as_secs_f64();
        for epochs in [1usize, 2, 3] {
            let mut w = tt;
            w.two_tower.epochs = epochs;
            let t = Instant::now();
            let model = Model::warm_start(&old, &split.train, &w, features.as_ref()).unwrap();
            let secs = t.elapsed().as_secs_f64();
            let (r, _) = evaluate(
                &model,
                &baseline,
                &split.train,
                &split.test,
                Protocol::Warm,
                &opts,
            )
            .unwrap();
            print_report(
                name,
                &format!("two-tower warm start, {epochs} epochs (older model: {old_secs:.2} s)"),
                secs,
                &r,
            );
        }
        let (r, _) = evaluate(
            &old,
            &baseline,
            &split.train,
            &split.test,
            Protocol::Warm,
            &opts,
        )
        .unwrap_or_else(|_| {
            // The older model's catalogue is smaller: score it on its own items.
            let b = train(old_rows, &ModelSpec::new(ModelKind::Popular), None).unwrap();
            evaluate(&old, &b, old_rows, &split.test, Protocol::Warm, &opts).unwrap()
        });
        print_report(name, "two-tower older model, not retrained", old_secs, &r);
    }
}

/// A session-structured shop log: `sessions` visits, each walking between related
/// designs. Designs come in designer groups of 10 with Zipf-like appeal; a visit
/// starts at a design drawn by appeal and each next view is, with probability
/// 0.5, another design of the same designer, 0.3 the designer's next design in
/// the shop's order (a "more like this" chain), 0.2 any design by appeal. Visits
/// last 2 + a geometric number of views (mean 6); a quarter of the visitors
/// come back (their id is reused), so the warm protocol has users too. Views
/// weigh 1, one in ten becomes an add-to-cart (3). Visits start 2 minutes apart,
/// views 20 s apart.
fn session_log(sessions: usize, items: usize, seed: u64) -> Vec<Interaction> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut acc = 0.0;
    let cdf: Vec<f64> = (0..items)
        .map(|r| {
            acc += 1.0 / ((r + 5) as f64).powf(0.9);
            acc
        })
        .collect();
    let mut perm: Vec<usize> = (0..items).collect();
    for i in (1..items).rev() {
        perm.swap(i, rng.random_range(0..=i));
    }
    let by_appeal = |u: f64| perm[cdf.partition_point(|&c| c < u * acc).min(items - 1)];
    let mut out = Vec::new();
    let mut returning: Vec<usize> = Vec::new();
    for s in 0..sessions {
        let user = if !returning.is_empty() && rng.random::<f64>() < 0.25 {
            returning[rng.random_range(0..returning.len())]
        } else {
            s
        };
        if rng.random::<f64>() < 0.3 {
            returning.push(user);
        }
        let mut cur = by_appeal(rng.random());
        let mut len = 2;
        while len < 30 && rng.random::<f64>() < 5.0 / 6.0 {
            len += 1;
        }
        let start = 1_700_000_000i64 + 120 * s as i64;
        for step in 0..len {
            let cart = rng.random::<f64>() < 0.1;
            let mut row = Interaction::rating(
                format!("v{user}"),
                format!("d{cur}"),
                if cart { 3.0 } else { 1.0 },
                start + 20 * step as i64,
            );
            row.interaction_type = if cart { "add_to_cart" } else { "view" }.into();
            out.push(row);
            let x: f64 = rng.random();
            let group = cur / 10 * 10;
            cur = if x < 0.5 {
                (group + rng.random_range(0..10)).min(items - 1)
            } else if x < 0.8 {
                (cur + 1) % items
            } else {
                by_appeal(rng.random())
            };
        }
    }
    out.sort_by_key(|r| r.timestamp);
    out
}

/// One scored row of the `sessions` table.
fn print_row(dataset: &str, protocol: Protocol, label: &str, users: usize, secs: f64, s: &Scores) {
    let mut line = format!("| {dataset} | {protocol:?} | {label} | {users} | {secs:.2} |");
    for k in ["ndcg@10", "recall@20", "hit_rate@10", "coverage@20"] {
        line.push_str(&format!(
            " {:.4} [{:.4}, {:.4}] |",
            s.metrics[k], s.metrics_ci[k][0], s.metrics_ci[k][1]
        ));
    }
    println!("{line}");
}

fn sessions(a: &Args) {
    let opts = EvalOptions::default();
    let dir = a
        .dump
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("manirec-bench-sessions"));
    let script = a
        .rest
        .get("anchors")
        .cloned()
        .unwrap_or_else(|| "scripts/anchors.py".into());
    let only = a.rest.get("only").cloned();
    let with_two_tower = a.rest.get("two-tower").map(String::as_str) == Some("1");
    let mut sets: Vec<(&str, Split)> = datasets(a);
    sets.push((
        "shop-300k",
        temporal_split(generate(300_000, 6_000, 5_000, 50, 7), 0.8),
    ));
    sets.push((
        "sessions-gen",
        temporal_split(session_log(40_000, 5_000, 11), 0.8),
    ));
    println!("| data | protocol | model | users | train s | ndcg@10 | recall@20 | hit_rate@10 | coverage@20 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut verdicts = Vec::new();
    for (name, split) in sets {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        write_split(&dir, name, &split);
        let baseline = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
        let f = |part: &str| dir.join(format!("{name}.{part}")).display().to_string();
        for protocol in [Protocol::Warm, Protocol::Session] {
            let pname = format!("{protocol:?}").to_lowercase();
            if a.rest.get("protocol").is_some_and(|p| *p != pname) {
                continue;
            }
            let cs = cases(&split.train, &split.test, protocol, baseline.items());
            let mut best_ours = (String::new(), 0.0f64, 0.0f64);
            let mut ease_lambda = 3000.0f32;
            let mut kinds: Vec<ModelKind> = ModelKind::ALL
                .into_iter()
                .filter(|k| *k != ModelKind::TwoTower || with_two_tower)
                .collect();
            kinds.retain(|k| *k != ModelKind::Popular);
            if let Some(only) = a.rest.get("kinds") {
                kinds.retain(|k| only.split(',').any(|o| o == k.as_str()));
            }
            kinds.insert(0, ModelKind::Popular);
            for kind in kinds {
                let t = Instant::now();
                let spec = if kind == ModelKind::Popular {
                    ModelSpec::new(kind)
                } else {
                    let r = tune(
                        &split.train,
                        &ModelSpec::new(kind),
                        None,
                        &TuneOptions {
                            protocol: Some(protocol),
                            max_trials: a
                                .rest
                                .get("trials")
                                .and_then(|t| t.parse().ok())
                                .unwrap_or(match kind {
                                    ModelKind::Ease => 12,
                                    // Most blend trials only merge cached graphs.
                                    ModelKind::Blend => 150,
                                    _ => 30,
                                }),
                            ..TuneOptions::default()
                        },
                    )
                    .unwrap();
                    eprintln!(
                        "{name} {pname} tune {kind}: {} trials in {:.1}s, validation ndcg@10 {:.4} on {} users: {}",
                        r.trials.len(),
                        t.elapsed().as_secs_f64(),
                        r.best_ndcg10,
                        r.validation_users,
                        serde_json::to_string(&(r.best.session, r.best.als.regularization, r.best.als.alpha, r.best.ease.lambda, r.best.signal.half_life_days)).unwrap()
                    );
                    r.best
                };
                if kind == ModelKind::Ease {
                    ease_lambda = spec.ease.lambda;
                }
                let t = Instant::now();
                let model = train(&split.train, &spec, None).unwrap();
                let secs = t.elapsed().as_secs_f64();
                let (r, lists) = evaluate(
                    &model,
                    &baseline,
                    &split.train,
                    &split.test,
                    protocol,
                    &opts,
                )
                .unwrap();
                let s = Scores {
                    metrics: r.metrics.clone(),
                    metrics_ci: r.metrics_ci.clone(),
                };
                print_row(name, protocol, kind.as_str(), r.users_evaluated, secs, &s);
                let w = File::create(dir.join(format!("{name}.{kind}.{pname}.jsonl"))).unwrap();
                write_dump(BufWriter::new(w), &lists).unwrap();
                if kind != ModelKind::Popular && r.metrics["ndcg@10"] > best_ours.1 {
                    best_ours = (
                        kind.to_string(),
                        r.metrics["ndcg@10"],
                        r.metrics["recall@20"],
                    );
                }
            }
            let mut best_anchor = (String::new(), 0.0f64, 0.0f64);
            let anchor_runs: Vec<(String, Vec<String>)> = vec![
                (
                    format!("anchor numpy EASE (lambda {ease_lambda})"),
                    vec!["ease".into(), "--lambda".into(), format!("{ease_lambda}")],
                ),
                (
                    "anchor implicit item-kNN (cosine, K 100)".into(),
                    vec!["itemknn".into()],
                ),
                ("anchor SR (steps 10, prune 20)".into(), vec!["sr".into()]),
                (
                    "anchor V-SKNN (k 100, sample 1000)".into(),
                    vec!["vsknn".into()],
                ),
            ];
            for (label, mut args) in anchor_runs {
                args.extend([
                    "--protocol".into(),
                    pname.clone(),
                    "--train".into(),
                    f("train.tsv"),
                    "--test".into(),
                    f("test.tsv"),
                    "--out".into(),
                    f(&format!("anchor.{}.{pname}.jsonl", args[0])),
                ]);
                let (info, lists) = run_anchor(Path::new(&script), &args);
                let s = score_ranked(&lists, &cs, baseline.items(), &opts);
                print_row(
                    name,
                    protocol,
                    &label,
                    cs.len(),
                    info["train_seconds"].as_f64().unwrap_or(f64::NAN),
                    &s,
                );
                if s.metrics["ndcg@10"] > best_anchor.1 {
                    best_anchor = (label, s.metrics["ndcg@10"], s.metrics["recall@20"]);
                }
            }
            verdicts.push(format!(
                "| {name} | {pname} | {} {:.4} / {:.4} | {} {:.4} / {:.4} | {:.2}x | {:.2}x |",
                best_ours.0,
                best_ours.1,
                best_ours.2,
                best_anchor.0,
                best_anchor.1,
                best_anchor.2,
                best_ours.1 / best_anchor.1.max(1e-12),
                best_ours.2 / best_anchor.2.max(1e-12),
            ));
        }
    }
    println!();
    println!("| data | protocol | best manirec (ndcg@10 / recall@20) | best anchor (ndcg@10 / recall@20) | ndcg@10 ratio | recall@20 ratio |");
    println!("|---|---|---|---|---|---|");
    for v in verdicts {
        println!("{v}");
    }
}

/// The sparse session models on a 100 000-item catalogue: wall time, peak
/// memory and the weights kept.
fn catalogue(a: &Args) {
    let rows: usize = a
        .rest
        .get("rows")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let items: usize = a
        .rest
        .get("items")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let log = session_log(rows / 7, items, 5);
    let distinct: std::collections::HashSet<&str> =
        log.iter().map(|r| r.item_id.as_str()).collect();
    println!(
        "{} rows, {} distinct items, {} threads",
        log.len(),
        distinct.len(),
        rayon::current_num_threads()
    );
    let mut kinds = vec![
        ModelKind::ItemKnn,
        ModelKind::Rp3beta,
        ModelKind::Sr,
        ModelKind::Vsknn,
        ModelKind::Ease,
    ];
    if let Some(only) = a.rest.get("kinds") {
        kinds.retain(|k| only.split(',').any(|o| o == k.as_str()));
    }
    for kind in kinds {
        let mut spec = ModelSpec::new(kind);
        if let Some(k) = a.rest.get("neighbours").and_then(|v| v.parse().ok()) {
            spec.ease.neighbours = k;
        }
        let t = Instant::now();
        let model = train(&log, &spec, None).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let bytes = model.to_bytes().unwrap().len();
        let extra = model.ease().map_or(String::new(), |e| {
            format!(
                " ({} active items, {}, neighbours {})",
                e.active_items(),
                if e.is_sparse() { "sparse" } else { "dense" },
                e.config().neighbours
            )
        });
        println!(
            "{kind}{extra}: {secs:.1}s, artifact {:.1} MiB, peak RSS so far {:.0} MiB",
            bytes as f64 / 1048576.0,
            peak_rss_mib()
        );
    }
}

/// Sparse EASE beside dense EASE on the public data sets: the same λ, both
/// protocols, neighbourhoods of `--neighbours a,b,…` items (forced sparse by
/// `max_items = 1`).
fn sparse_ease(a: &Args) {
    let opts = EvalOptions::default();
    let lambda: f32 = a
        .rest
        .get("lambda")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000.0);
    let ks: Vec<usize> = a
        .rest
        .get("neighbours")
        .map_or("50,100,200,400".into(), |v| v.clone())
        .split(',')
        .filter_map(|v| v.parse().ok())
        .collect();
    let only = a.rest.get("only").cloned();
    header();
    for (name, split) in datasets(a) {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let baseline = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
        let mut runs: Vec<(String, ModelSpec)> = Vec::new();
        let mut dense = ModelSpec::new(ModelKind::Ease);
        dense.ease.lambda = lambda;
        runs.push((format!("dense EASE (lambda {lambda})"), dense));
        for &k in &ks {
            let mut s = dense;
            s.ease.max_items = 1;
            s.ease.neighbours = k;
            runs.push((format!("sparse EASE (lambda {lambda}, neighbours {k})"), s));
        }
        for (label, spec) in runs {
            let t = Instant::now();
            let model = train(&split.train, &spec, None).unwrap();
            let secs = t.elapsed().as_secs_f64();
            for protocol in [Protocol::Warm, Protocol::Session] {
                let (r, _) = evaluate(
                    &model,
                    &baseline,
                    &split.train,
                    &split.test,
                    protocol,
                    &opts,
                )
                .unwrap();
                print_report(name, &label, secs, &r);
            }
        }
    }
}

/// The 5-minute dedup as it was before: the latest row of each (user, item,
/// window) wins, whatever its weight (a view after a purchase replaced it).
fn dedup_latest(rows: Vec<Interaction>) -> Vec<Interaction> {
    let mut keep: HashMap<(String, String, i64), usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let key = (
            r.user_id.clone(),
            r.item_id.clone(),
            r.timestamp.div_euclid(300),
        );
        let e = keep.entry(key).or_insert(i);
        if r.timestamp >= rows[*e].timestamp {
            *e = i;
        }
    }
    let mut kept = vec![false; rows.len()];
    for &i in keep.values() {
        kept[i] = true;
    }
    rows.into_iter()
        .zip(kept)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

/// The strongest-row dedup beside the latest-row one (see the module).
fn dedup(a: &Args) {
    let opts = EvalOptions::default();
    let sets: Vec<(&str, Vec<Interaction>)> = vec![
        ("shop-300k", generate(300_000, 6_000, 5_000, 50, 7)),
        ("sessions-gen", session_log(40_000, 5_000, 11)),
    ];
    let only = a.rest.get("only").cloned();
    println!("| data | dedup | protocol | model | users | train s | ndcg@10 | recall@20 | hit_rate@10 | coverage@20 |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, rows) in sets {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let total = rows.len();
        let strong_rows = rows.iter().filter(|r| r.weight > 1.0).count();
        for policy in ["strongest", "latest"] {
            let split = if policy == "strongest" {
                temporal_split(rows.clone(), 0.8)
            } else {
                let d = dedup_latest(rows.clone());
                let removed = total - d.len();
                let mut s = temporal_split(d, 0.8);
                s.deduplicated = removed;
                s
            };
            let strong_kept = split
                .train
                .iter()
                .chain(&split.test)
                .filter(|r| r.weight > 1.0)
                .count();
            eprintln!(
                "{name} dedup {policy}: {total} rows, {} removed, cart/purchase rows {strong_rows} before, {strong_kept} after",
                split.deduplicated
            );
            let baseline = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
            for kind in [
                ModelKind::Popular,
                ModelKind::Als,
                ModelKind::Ease,
                ModelKind::ItemKnn,
                ModelKind::Sr,
                ModelKind::Vsknn,
            ] {
                let spec = ModelSpec::new(kind);
                let t = Instant::now();
                let model = train(&split.train, &spec, None).unwrap();
                let secs = t.elapsed().as_secs_f64();
                for protocol in [Protocol::Warm, Protocol::Session] {
                    let Ok((r, _)) = evaluate(
                        &model,
                        &baseline,
                        &split.train,
                        &split.test,
                        protocol,
                        &opts,
                    ) else {
                        continue;
                    };
                    if r.users_evaluated == 0 {
                        continue;
                    }
                    let mut line = format!(
                        "| {name} | {policy} | {protocol:?} | {kind} | {} | {secs:.2} |",
                        r.users_evaluated
                    );
                    for k in ["ndcg@10", "recall@20", "hit_rate@10", "coverage@20"] {
                        line.push_str(&format!(
                            " {:.4} [{:.4}, {:.4}] |",
                            r.metrics[k], r.metrics_ci[k][0], r.metrics_ci[k][1]
                        ));
                    }
                    println!("{line}");
                }
            }
        }
    }
}

/// A CSV line's fields (the Olist files quote nothing that holds a comma in the
/// columns read here).
fn csv_fields(line: &str) -> Vec<String> {
    line.split(',')
        .map(|f| f.trim_matches('"').to_string())
        .collect()
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let f = BufReader::new(File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    f.lines().skip(1).map(|l| csv_fields(&l.unwrap())).collect()
}

/// MovieLens 100K's users (`u.user`: id|age|gender|occupation|zip) as account
/// features, by the pipeline's rules (age by its first digit), and the first zip
/// digit (a region of the United States).
fn ml100k_accounts(dir: &Path, f: &mut Features) {
    let text = std::fs::read_to_string(dir.join("u.user")).unwrap();
    for l in text.lines() {
        let p: Vec<&str> = l.split('|').collect();
        let age: u32 = p[1].parse().unwrap();
        f.insert_user(p[0], "age", &(age / 10 * 10).to_string());
        f.insert_user(p[0], "gender", &p[2].to_lowercase());
        f.insert_user(p[0], "occupation", p[3]);
        f.insert_user(p[0], "region", &p[4][..1]);
    }
}

/// The Olist sample: one row per order item (`customer_unique_id`, product,
/// purchase time), products' categories as item features, customers' states as
/// account features.
fn olist(dir: &Path) -> (Vec<Interaction>, Features) {
    let customers: HashMap<String, (String, String)> = csv_rows(&dir.join("customers.csv"))
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].clone(), r[4].to_lowercase())))
        .collect();
    let orders: HashMap<String, (String, i64)> = csv_rows(&dir.join("orders.csv"))
        .into_iter()
        .filter_map(|r| {
            let t = unix_seconds(&r[3])?;
            let (user, _) = customers.get(&r[1])?;
            Some((r[0].clone(), (user.clone(), t)))
        })
        .collect();
    let mut rows = Vec::new();
    for r in csv_rows(&dir.join("order_items.csv")) {
        if let Some((user, t)) = orders.get(&r[0]) {
            rows.push(Interaction::rating(user.as_str(), r[2].as_str(), 1.0, *t));
        }
    }
    let mut f = Features::new();
    for r in csv_rows(&dir.join("products.csv")) {
        if !r[1].is_empty() {
            f.insert(&r[0], "category", &r[1]);
        }
    }
    for (user, state) in customers.values() {
        f.insert_user(user, "state", state);
    }
    (rows, f)
}

/// `YYYY-MM-DD hh:mm:ss` (UTC) as Unix seconds (days from the civil date, as
/// in Howard Hinnant's algorithm).
fn unix_seconds(s: &str) -> Option<i64> {
    let n = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let (hh, mm, ss) = (n(11, 13)?, n(14, 16)?, n(17, 19)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// "Popular among customers like you": each item's share of the train users who
/// share a feature with the customer, summed over the customer's features
/// (global popularity breaks ties); popularity for a customer without features.
fn group_popularity(
    split: &Split,
    f: &Features,
    cases: &[manirec_models::evaluate::Case],
) -> Vec<RankedList> {
    let mut users_items: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
    for r in &split.train {
        users_items
            .entry(&r.user_id)
            .or_default()
            .insert(&r.item_id);
    }
    let mut group: HashMap<&str, (f64, HashMap<&str, f64>)> = HashMap::new();
    let mut global: HashMap<&str, f64> = HashMap::new();
    for (u, items) in &users_items {
        for &i in items {
            *global.entry(i).or_default() += 1.0;
        }
        for name in f.user(u) {
            let g = group.entry(name.as_str()).or_default();
            g.0 += 1.0;
            for &i in items {
                *g.1.entry(i).or_default() += 1.0;
            }
        }
    }
    let top = global.values().fold(1.0f64, |a, &b| a.max(b));
    cases
        .iter()
        .map(|c| {
            let mut score: HashMap<&str, f64> =
                global.iter().map(|(&i, &n)| (i, 1e-6 * n / top)).collect();
            for name in f.user(&c.user_id) {
                if let Some((n, items)) = group.get(name.as_str()) {
                    for (&i, &k) in items {
                        *score.entry(i).or_default() += k / n;
                    }
                }
            }
            let mut ranked: Vec<(&str, f64)> = score.into_iter().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            RankedList {
                user_id: c.user_id.clone(),
                context: None,
                items: ranked
                    .into_iter()
                    .take(20)
                    .map(|(i, _)| i.to_string())
                    .collect(),
            }
        })
        .collect()
}

fn accounts(a: &Args) {
    let opts = EvalOptions::default();
    let mut sets: Vec<(&str, Split, Features)> = Vec::new();
    let ml = a.data.join("ml-100k");
    if ml.join("u.user").exists() {
        let mut f = ml100k_genres(&ml);
        ml100k_accounts(&ml, &mut f);
        sets.push((
            "ml-100k",
            temporal_split(read_ml100k(&ml.join("u.data")), 0.8),
            f,
        ));
    }
    let ol = a.data.join("olist-10k-subset");
    if ol.join("customers.csv").exists() {
        let (rows, f) = olist(&ol);
        sets.push(("olist", temporal_split(rows, 0.8), f));
    }
    println!("| data | protocol | model | users | train s | NDCG@10 | Recall@20 | HitRate@10 | coverage@20 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, split, with_accounts) in &sets {
        let mut items_only = Features::new();
        for i in with_accounts.items() {
            for feat in with_accounts.get(i) {
                let (field, value) = feat.split_once('=').unwrap();
                items_only.insert(i, field, value);
            }
        }
        let pop = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
        let spec = two_tower_spec(a);
        let mut models = Vec::new();
        for (label, f) in [
            ("two-tower, items' features", &items_only),
            ("two-tower + accounts", with_accounts),
        ] {
            let t = Instant::now();
            let m = train(&split.train, &spec, Some(f)).unwrap();
            models.push((label, m, t.elapsed().as_secs_f64()));
        }
        for protocol in [Protocol::FirstVisit, Protocol::Session, Protocol::Warm] {
            let cs = cases(&split.train, &split.test, protocol, pop.items());
            let mut printed_pop = false;
            for (label, m, secs) in &models {
                let (r, lists) =
                    evaluate(m, &pop, &split.train, &split.test, protocol, &opts).unwrap();
                if !printed_pop {
                    let s = Scores {
                        metrics: r.baseline.clone(),
                        metrics_ci: r.baseline_ci.clone(),
                    };
                    print_row(name, protocol, "popularity", r.users_evaluated, 0.0, &s);
                    if protocol == Protocol::FirstVisit {
                        let g = group_popularity(split, with_accounts, &cs);
                        let s = score_ranked(&g, &cs, pop.items(), &opts);
                        print_row(
                            name,
                            protocol,
                            "popular among customers like you",
                            cs.len(),
                            0.0,
                            &s,
                        );
                    }
                    printed_pop = true;
                }
                let s = Scores {
                    metrics: r.metrics.clone(),
                    metrics_ci: r.metrics_ci.clone(),
                };
                print_row(name, protocol, label, r.users_evaluated, *secs, &s);
                eprintln!(
                    "{name} {protocol:?} {label}: lift over popularity [{:.4}, {:.4}]",
                    r.ndcg10_lift_ci[0], r.ndcg10_lift_ci[1]
                );
                if let Some(dir) = &a.dump {
                    std::fs::create_dir_all(dir).unwrap();
                    write_split(dir, name, split);
                    let tag = if label.contains("accounts") {
                        "accounts"
                    } else {
                        "items"
                    };
                    let file = dir.join(format!("{name}.{tag}.{protocol:?}.jsonl").to_lowercase());
                    write_dump(BufWriter::new(File::create(file).unwrap()), &lists).unwrap();
                }
            }
        }
    }
}
