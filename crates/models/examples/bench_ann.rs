//! Benchmark (not a test) of the retrieval index against exact scoring.
//!
//! For an ALS model (64 factors by default) trained on MovieLens latest-small
//! (`ratings.csv`, read by path from `--data`, never copied) and on a generated
//! shop of the large serving benchmark's shape (100,000 customers, 20,000
//! items; `--rows` interactions, 5 M by default), it reports the index's build
//! time, recall@10 of indexed against exact answers for sampled known
//! customers (1.0 when the bound stops the search, as it always does), and the
//! time of one top-10 answer each way, single-threaded, in the same run.
//!
//! `cargo run --release -p manirec-models --example bench_ann -- [--data DIR]
//!  [--rows N] [--factors F] [--queries N]`

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Instant;

use manirec_models::{train, Interaction, ModelKind, ModelSpec, Request};
use rand::{Rng, SeedableRng};

struct Args {
    data: PathBuf,
    rows: usize,
    factors: usize,
    queries: usize,
}

fn args() -> Args {
    let mut a = Args {
        data: PathBuf::from("/work/shared/data"),
        rows: 5_000_000,
        factors: 64,
        queries: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = v.into(),
            "--rows" => a.rows = v.parse().unwrap(),
            "--factors" => a.factors = v.parse().unwrap(),
            "--queries" => a.queries = v.parse().unwrap(),
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

fn latest_small(a: &Args) -> Option<Vec<Interaction>> {
    let path = a.data.join("ml-latest-small/ratings.csv");
    let f = File::open(&path).ok()?;
    Some(
        BufReader::new(f)
            .lines()
            .skip(1)
            .map(|l| {
                let l = l.unwrap();
                let p: Vec<&str> = l.split(',').collect();
                Interaction::rating(p[0], p[1], p[2].parse().unwrap(), p[3].parse().unwrap())
            })
            .collect(),
    )
}

/// The large serving benchmark's shape: heavy-tailed customers and items,
/// taste groups, views, carts and purchases.
fn shop(rows: usize, users: usize, items: usize, groups: usize) -> Vec<Interaction> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
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
    let (user_cdf, item_cdf) = (cdf(users, 0.6), cdf(items, 0.8));
    let per_group = items / groups;
    let group_cdf = cdf(per_group, 0.8);
    let mut perm: Vec<usize> = (0..items).collect();
    for i in (1..items).rev() {
        perm.swap(i, rng.random_range(0..=i));
    }
    (0..rows)
        .map(|r| {
            let u = draw(&user_cdf, rng.random());
            let item = if rng.random::<f64>() < 0.7 {
                (u % groups) * per_group + draw(&group_cdf, rng.random())
            } else {
                perm[draw(&item_cdf, rng.random())]
            };
            let w = [1.0, 1.0, 1.0, 3.0, 5.0][rng.random_range(0..5)];
            Interaction::rating(
                format!("u{u}"),
                format!("i{item}"),
                w,
                1_700_000_000 + r as i64,
            )
        })
        .collect()
}

fn run(name: &str, rows: &[Interaction], a: &Args) {
    let mut spec = ModelSpec::new(ModelKind::Als);
    spec.als.factors = a.factors;
    let started = Instant::now();
    let model = train(rows, &spec, None).unwrap();
    let train_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let Some(index) = model.retrieval_index() else {
        println!(
            "{name}: {} items, below the index's threshold",
            model.items().len()
        );
        return;
    };
    let build_s = started.elapsed().as_secs_f64();
    let mut users: Vec<&str> = rows
        .iter()
        .map(|r| r.user_id.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    users.sort_unstable();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let sample: Vec<&str> = (0..a.queries)
        .map(|_| users[rng.random_range(0..users.len())])
        .collect();
    let time = |indexed: bool| {
        let started = Instant::now();
        let answers: Vec<Vec<String>> = sample
            .iter()
            .map(|u| {
                let req = Request {
                    index: indexed.then_some(&index),
                    ..Request::user(u, 10)
                };
                model
                    .recommend(&req)
                    .into_iter()
                    .map(|s| s.item_id)
                    .collect()
            })
            .collect();
        (
            started.elapsed().as_secs_f64() / sample.len() as f64,
            answers,
        )
    };
    let (exact_s, exact) = time(false);
    let (indexed_s, indexed) = time(true);
    let hits: usize = exact
        .iter()
        .zip(&indexed)
        .map(|(e, i)| i.iter().filter(|x| e.contains(x)).count())
        .sum();
    let total: usize = exact.iter().map(Vec::len).sum();
    println!(
        "{name}: {} users, {} items, {} factors, ALS trained in {train_s:.1} s; index of {} lists built in {build_s:.2} s",
        users.len(),
        model.items().len(),
        a.factors,
        index.lists()
    );
    println!(
        "  top-10 for {} known customers: exact {:.1} µs, indexed {:.1} µs ({:.2}x); recall@10 of indexed vs exact {:.4}",
        sample.len(),
        exact_s * 1e6,
        indexed_s * 1e6,
        exact_s / indexed_s,
        hits as f64 / total as f64
    );
}

fn main() {
    let a = args();
    // One thread for the answers, as a request gets.
    rayon::ThreadPoolBuilder::new().build_global().ok();
    match latest_small(&a) {
        Some(rows) => run("MovieLens latest-small", &rows, &a),
        None => println!(
            "MovieLens latest-small not found under {}",
            a.data.display()
        ),
    }
    let rows = shop(a.rows, 100_000, 20_000, 40);
    run("generated shop", &rows, &a);
}
