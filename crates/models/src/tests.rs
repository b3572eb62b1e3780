//! Behaviour tests on small generated data (no public data set is ever read).

use std::collections::{HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::evaluate::{self, cases, evaluate, EvalOptions, Protocol};
use crate::{
    temporal_split, train, Anchor, Features, Interaction, Model, ModelKind, ModelSpec, Request,
    Scored, Vocab,
};

/// Users in `clusters` taste groups of `per_cluster` items each; every user draws
/// 10 items, 9 in ten from their own group, the rest anywhere; one day apart.
pub(crate) fn clustered(
    users: usize,
    clusters: usize,
    per_cluster: usize,
    seed: u64,
) -> Vec<Interaction> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows = Vec::new();
    let mut t = 1_600_000_000i64;
    for _ in 0..10 {
        for u in 0..users {
            let c = u % clusters;
            let item = if rng.random::<f32>() < 0.9 {
                c * per_cluster + rng.random_range(0..per_cluster)
            } else {
                rng.random_range(0..clusters * per_cluster)
            };
            t += 600;
            rows.push(Interaction::rating(
                format!("u{u}"),
                format!("i{item}"),
                1.0 + rng.random_range(0..3) as f32,
                t,
            ));
        }
    }
    rows
}

fn small_als() -> ModelSpec {
    let mut spec = ModelSpec::new(ModelKind::Als);
    spec.als.factors = 8;
    spec.als.iterations = 10;
    spec.als.regularization = 1.0;
    spec.als.alpha = 2.0;
    spec
}

fn small_two_tower() -> ModelSpec {
    let mut spec = ModelSpec::new(ModelKind::TwoTower);
    spec.two_tower.dim = 16;
    spec.two_tower.epochs = 8;
    spec.two_tower.batch_size = 128;
    spec.two_tower.learning_rate = 0.02;
    spec
}

/// Item `i{n}` of [`clustered`]'s data: category `c{group}`, designer `d{n / 5}`.
fn clustered_features(items: usize, per_cluster: usize) -> Features {
    let mut f = Features::new();
    for i in 0..items {
        f.insert(
            &format!("i{i}"),
            "category",
            &format!("c{}", i / per_cluster),
        );
        f.insert(&format!("i{i}"), "designer", &format!("d{}", i / 5));
    }
    f
}

fn small_ease() -> ModelSpec {
    let mut spec = ModelSpec::new(ModelKind::Ease);
    spec.ease.lambda = 10.0;
    spec
}

#[test]
fn warm_protocol_picks_users_with_train_and_new_test_items_only() {
    let r = |u: &str, i: &str, t| Interaction::rating(u, i, 1.0, t);
    let train = vec![
        r("alice", "a", 1),
        r("alice", "b", 2),
        r("bob", "a", 3),
        r("carol", "c", 4),
        r("anonymous:image:1", "d", 5),
    ];
    let test = vec![
        r("alice", "b", 10), // already had b: not relevant
        r("alice", "c", 11), // relevant
        r("alice", "z", 12), // not in train: not relevant
        r("bob", "a", 13),   // bob's only test item was in his train: bob not evaluated
        r("dave", "a", 14),  // no train: not warm
        r("anonymous:image:1", "c", 15),
        r("carol", "d", 16), // d occurs in train only through an anonymous row: still an item
    ];
    let items = Vocab::from_ids(["a", "b", "c", "d"].map(String::from));
    let cs = cases(&train, &test, Protocol::Warm, &items);
    let got: Vec<(String, Vec<u32>, Vec<u32>)> = cs
        .iter()
        .map(|c| {
            let mut rel: Vec<u32> = c.relevant.iter().copied().collect();
            rel.sort();
            let mut ex: Vec<u32> = c.exclude.iter().copied().collect();
            ex.sort();
            (c.user_id.clone(), rel, ex)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("alice".into(), vec![2], vec![0, 1]),
            ("carol".into(), vec![3], vec![2])
        ]
    );
}

#[test]
fn session_protocol_splits_new_users_items_in_half_by_time() {
    let r = |u: &str, i: &str, t| Interaction::rating(u, i, 1.0, t);
    let train = vec![
        r("old", "a", 1),
        r("old", "b", 2),
        r("old", "c", 3),
        r("old", "d", 4),
    ];
    let test = vec![
        r("new", "b", 20),
        r("new", "a", 10), // earliest: context
        r("new", "b", 21), // repeat of a context item
        r("new", "c", 30),
        r("new", "d", 40),
        r("new", "x", 45), // not in train: never relevant
        r("one", "a", 50), // a single distinct item: not evaluated
        r("one", "a", 51),
        r("old", "d", 60), // has train: not a session user
        // Unknown items are dropped before the halving: y, z vanish, so the
        // context is {c} and the relevant set {a}, not context {y, z} and {c, a}.
        r("late", "y", 70),
        r("late", "z", 71),
        r("late", "c", 72),
        r("late", "a", 73),
        // Two distinct items, only one of them in train: not evaluated.
        r("thin", "q", 80),
        r("thin", "a", 81),
    ];
    let items = Vocab::from_ids(["a", "b", "c", "d"].map(String::from));
    let cs = cases(&train, &test, Protocol::Session, &items);
    assert_eq!(cs.len(), 2);
    let late = &cs[1];
    assert_eq!(late.user_id, "late");
    assert_eq!(late.context, vec!["c"]);
    assert_eq!(late.relevant, HashSet::from([0]));
    assert_eq!(late.rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2]);
    let c = &cs[0];
    assert_eq!(c.user_id, "new");
    // 5 distinct items in time order a, b, c, d, x: context = first 2.
    assert_eq!(c.context, vec!["a", "b"]);
    assert_eq!(c.exclude, HashSet::from([0, 1]));
    assert_eq!(c.relevant, HashSet::from([2, 3]));
    // The model sees the rows before the first relevant item: a@10, b@20, b@21.
    assert_eq!(
        c.rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![0, 1, 1]
    );
}

#[test]
fn metrics_follow_the_contract_formulas() {
    // One user, relevant {0, 3}; the popular model ranks by score: 3, 1, 0, 2, …
    let mut rows = Vec::new();
    let counts = [3, 4, 1, 5, 0, 0, 0, 0, 0, 0, 0, 0];
    for (i, &n) in counts.iter().enumerate() {
        rows.push(Interaction::rating("anonymous:x", format!("i{i}"), 1.0, 1));
        for k in 0..n {
            rows.push(Interaction::rating(
                format!("p{k}"),
                format!("i{i}"),
                1.0,
                1,
            ));
        }
    }
    rows.push(Interaction::rating("u", "i11", 1.0, 1));
    let test = vec![
        Interaction::rating("u", "i0", 1.0, 2),
        Interaction::rating("u", "i3", 1.0, 3),
    ];
    let model = train(&rows, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    let (r, lists) = evaluate(
        &model,
        &model,
        &rows,
        &test,
        Protocol::Warm,
        &EvalOptions::default(),
    )
    .unwrap();
    assert_eq!(lists[0].items[..4], ["i3", "i1", "i0", "i2"]);
    let ln = |p: f64| 1.0 / (p + 1.0).log2();
    let ndcg = (ln(1.0) + ln(3.0)) / (ln(1.0) + ln(2.0));
    assert!((r.metrics["ndcg@10"] - ndcg).abs() < 1e-12);
    assert_eq!(r.metrics["recall@10"], 1.0);
    assert_eq!(r.metrics["hit_rate@10"], 1.0);
    assert!((r.metrics["map@10"] - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    // 11 candidates (i11 is the user's own) of 12 catalogue items.
    assert!((r.metrics["coverage@20"] - 11.0 / 12.0).abs() < 1e-12);
    assert_eq!(r.metrics_ci["ndcg@10"], [ndcg, ndcg]);
}

#[test]
fn als_and_ease_beat_popularity_on_data_with_taste_groups() {
    let split = temporal_split(clustered(300, 4, 25, 7), 0.8);
    let pop = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    for spec in [small_als(), small_ease()] {
        let model = train(&split.train, &spec, None).unwrap();
        for protocol in [Protocol::Warm, Protocol::Session] {
            let (r, _) = evaluate(
                &model,
                &pop,
                &split.train,
                &split.test,
                protocol,
                &EvalOptions::default(),
            )
            .unwrap();
            if protocol == Protocol::Warm {
                assert!(r.users_evaluated > 100, "{}", r.users_evaluated);
                assert!(
                    r.beats_baseline,
                    "{} {:?}: {:?} vs {:?}",
                    spec.kind, protocol, r.metrics, r.baseline
                );
                assert!(r.warning.is_none());
            }
        }
    }
}

#[test]
fn a_model_that_does_not_beat_popularity_says_so() {
    let split = temporal_split(clustered(200, 4, 25, 3), 0.8);
    let pop = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    let mut bad = small_als();
    bad.als.iterations = 0; // random factors
    let model = train(&split.train, &bad, None).unwrap();
    let (r, _) = evaluate(
        &model,
        &pop,
        &split.train,
        &split.test,
        Protocol::Warm,
        &EvalOptions::default(),
    )
    .unwrap();
    assert!(!r.beats_baseline);
    assert!(r.warning.unwrap().contains("does NOT beat popularity"));
}

#[test]
fn fold_in_recommends_from_the_visitors_taste_group() {
    let rows = clustered(200, 4, 25, 11);
    // The two-tower query tower scores the history alone (no user id).
    for spec in [small_als(), small_ease(), small_two_tower()] {
        let model = train(&rows, &spec, None).unwrap();
        // A visitor who looked at three items of group 2 (items 50..75).
        let history: Vec<Interaction> = [50, 57, 63]
            .iter()
            .map(|i| Interaction::rating("visitor", format!("i{i}"), 2.0, 1))
            .collect();
        let recs = model.recommend(&Request::visitor(&history, 10));
        assert_eq!(recs.len(), 10);
        let in_group = recs
            .iter()
            .filter(|s| (50..75).contains(&s.item_id[1..].parse::<usize>().unwrap()))
            .count();
        assert!(in_group >= 8, "{}: {recs:?}", spec.kind);
        assert!(recs
            .iter()
            .all(|s| !["i50", "i57", "i63"].contains(&s.item_id.as_str())));
    }
}

#[test]
fn reloaded_models_score_bit_for_bit_the_same() {
    let rows = clustered(120, 3, 20, 5);
    let cats: HashMap<String, String> = (0..60)
        .map(|i| (format!("i{i}"), format!("c{}", i / 20)))
        .collect();
    let mut features = Features::from_categories(&cats);
    // Customers' accounts, and one customer with an account and no row yet.
    for u in 0..120 {
        features.insert_user(&format!("u{u}"), "country", &format!("k{}", u % 3));
    }
    features.insert_user("newcomer", "country", "k1");
    let mut sparse_ease = small_ease();
    sparse_ease.ease.max_items = 10;
    sparse_ease.ease.neighbours = 8;
    let specs = ModelKind::ALL.into_iter().map(|kind| match kind {
        ModelKind::Als => small_als(),
        ModelKind::Ease => small_ease(),
        ModelKind::TwoTower => small_two_tower(),
        _ => ModelSpec::new(kind),
    });
    for spec in specs.chain([sparse_ease]) {
        let kind = spec.kind;
        let model = train(&rows, &spec, Some(&features)).unwrap();
        if spec == sparse_ease {
            assert!(model.ease().unwrap().is_sparse(), "above max_items: sparse");
        }
        let bytes = model.to_bytes().unwrap();
        // The same model is the same bytes (checksums compare models across stores).
        for _ in 0..4 {
            assert!(model.to_bytes().unwrap() == bytes, "{kind}: bytes differ");
        }
        let back = Model::from_bytes(&bytes).unwrap();
        assert!(back == model, "{kind}: reloaded model differs");
        let history = vec![
            Interaction::rating("v", "i3", 1.0, 5),
            Interaction::rating("v", "i4", 2.0, 6),
        ];
        for req in [
            Request::user("u7", 20),
            Request::user("newcomer", 20),
            Request::visitor(&history, 20),
        ] {
            let a = model.recommend(&req);
            let b = back.recommend(&req);
            assert_eq!(a.len(), 20);
            let bits = |v: &[crate::Scored]| {
                v.iter()
                    .map(|s| (s.item_id.clone(), s.score.to_bits()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&a), bits(&b), "{kind}");
        }
        assert!(matches!(
            Model::from_bytes(&bytes[..bytes.len() / 2]),
            Err(crate::Error::Artifact(_))
        ));
    }
}

#[test]
fn category_popularity_and_similar_items() {
    let rows = clustered(120, 3, 20, 9);
    let cats: HashMap<String, String> = (0..60)
        .map(|i| (format!("i{i}"), format!("c{}", i / 20)))
        .collect();
    let features = Features::from_categories(&cats);
    let model = train(&rows, &small_ease(), Some(&features)).unwrap();
    let top = model.most_popular(5, Some("c1"));
    assert_eq!(top.len(), 5);
    assert!(top.iter().all(|s| cats[&s.item_id] == "c1"));
    assert!(top.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(model.most_popular(5, Some("nope")).is_empty());
    let sim = model.similar("i25", 5);
    assert!(
        sim.iter().filter(|s| cats[&s.item_id] == "c1").count() >= 4,
        "{sim:?}"
    );
    let mut req = Request::user("u1", 5);
    req.category = Some("c2");
    assert!(model
        .recommend(&req)
        .iter()
        .all(|s| cats[&s.item_id] == "c2"));
}

#[test]
fn warm_start_adds_new_users_and_items_and_keeps_quality() {
    let all = clustered(300, 4, 25, 21);
    let split = temporal_split(all, 0.8);
    // The previous model saw the first half of train; the new train adds users and items.
    let old_rows: Vec<Interaction> = split.train[..split.train.len() / 2]
        .iter()
        .filter(|r| {
            r.user_id[1..].parse::<usize>().unwrap() < 250
                && r.item_id[1..].parse::<usize>().unwrap() % 25 < 20
        })
        .cloned()
        .collect();
    let spec = small_als();
    let old = train(&old_rows, &spec, None).unwrap();
    let mut warm_spec = spec;
    warm_spec.als.iterations = 3;
    let warm = Model::warm_start(&old, &split.train, &warm_spec, None).unwrap();
    let full = train(&split.train, &spec, None).unwrap();
    assert_eq!(warm.items().len(), full.items().len());
    assert!(warm.als().unwrap().users.len() > old.als().unwrap().users.len());
    let pop = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    let opts = EvalOptions::default();
    let (w, _) = evaluate::evaluate(
        &warm,
        &pop,
        &split.train,
        &split.test,
        Protocol::Warm,
        &opts,
    )
    .unwrap();
    let (f, _) = evaluate::evaluate(
        &full,
        &pop,
        &split.train,
        &split.test,
        Protocol::Warm,
        &opts,
    )
    .unwrap();
    assert!(w.beats_baseline);
    assert!(
        w.metrics["ndcg@10"] > 0.9 * f.metrics["ndcg@10"],
        "{} vs {}",
        w.metrics["ndcg@10"],
        f.metrics["ndcg@10"]
    );
    assert!(Model::warm_start(&pop, &split.train, &warm_spec, None).is_err());
}

#[test]
fn training_does_not_depend_on_the_number_of_threads() {
    let rows = clustered(150, 3, 20, 4);
    let mut one = small_als();
    one.als.threads = Some(1);
    let mut two = one;
    two.als.threads = Some(2);
    let (a, b) = (
        train(&rows, &one, None).unwrap(),
        train(&rows, &two, None).unwrap(),
    );
    let bits = |m: &Model| {
        m.als()
            .unwrap()
            .user_factors
            .iter()
            .chain(&m.als().unwrap().item_factors)
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    assert!(
        bits(&a) == bits(&b),
        "ALS factors differ between 1 and 2 threads"
    );
    let mut e1 = small_ease();
    e1.ease.threads = Some(1);
    let mut e2 = e1;
    e2.ease.threads = Some(2);
    let (a, b) = (
        train(&rows, &e1, None).unwrap(),
        train(&rows, &e2, None).unwrap(),
    );
    assert!(
        a.ease().unwrap().weights == b.ease().unwrap().weights,
        "EASE weights differ between 1 and 2 threads"
    );
}

#[test]
fn two_tower_beats_popularity_on_data_with_taste_groups() {
    let split = temporal_split(clustered(300, 4, 25, 7), 0.8);
    let pop = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    let model = train(&split.train, &small_two_tower(), None).unwrap();
    let (r, _) = evaluate(
        &model,
        &pop,
        &split.train,
        &split.test,
        Protocol::Warm,
        &EvalOptions::default(),
    )
    .unwrap();
    assert!(r.users_evaluated > 100);
    assert!(r.beats_baseline, "{:?} vs {:?}", r.metrics, r.baseline);
}

#[test]
fn a_first_visit_is_ranked_by_the_customers_account() {
    // Four taste groups; a customer's country names their group. Customers
    // u240.. have an account and no train row: their first visit.
    let rows = clustered(300, 4, 20, 3);
    let is_new = |r: &Interaction| r.user_id[1..].parse::<usize>().unwrap() >= 240;
    let (test, train_rows): (Vec<Interaction>, Vec<Interaction>) =
        rows.into_iter().partition(is_new);
    let mut features = clustered_features(80, 20);
    for u in 0..300 {
        features.insert_user(&format!("u{u}"), "country", &format!("k{}", u % 4));
    }
    // A value no trained customer has was never learnt: it is not kept.
    features.insert_user("u250", "city", "nowhere");
    features.insert_user("u299", "country", "k9");
    let pop = train(&train_rows, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    let opts = EvalOptions::default();
    let model = train(&train_rows, &small_two_tower(), Some(&features)).unwrap();
    assert_eq!(model.two_tower().unwrap().accounts(), 300);
    assert!(!model
        .two_tower()
        .unwrap()
        .knows_feature("user:city=nowhere"));
    assert!(!model.two_tower().unwrap().knows_feature("user:country=k9"));
    let (r, lists) = evaluate(
        &model,
        &pop,
        &train_rows,
        &test,
        Protocol::FirstVisit,
        &opts,
    )
    .unwrap();
    assert_eq!(r.users_evaluated, 60);
    assert!(lists.iter().all(|l| l.context.is_none()));
    assert!(
        r.beats_baseline && r.metrics["ndcg@10"] > 2.0 * r.baseline["ndcg@10"],
        "{:?} vs {:?}",
        r.metrics,
        r.baseline
    );
    // The same model without accounts knows nothing of them: popularity's answer.
    let items_only = clustered_features(80, 20);
    let blind = train(&train_rows, &small_two_tower(), Some(&items_only)).unwrap();
    let (b, _) = evaluate(
        &blind,
        &pop,
        &train_rows,
        &test,
        Protocol::FirstVisit,
        &opts,
    )
    .unwrap();
    assert_eq!(b.metrics["ndcg@10"], b.baseline["ndcg@10"]);
    // Warm start takes the accounts given now, never the previous model's (an
    // erased customer's account is gone from the shop).
    let again = Model::warm_start(&model, &train_rows, model.spec(), Some(&items_only)).unwrap();
    assert_eq!(again.two_tower().unwrap().accounts(), 0);
    let again = Model::warm_start(&model, &train_rows, model.spec(), Some(&features)).unwrap();
    assert_eq!(again.two_tower().unwrap().accounts(), 300);
}

#[test]
fn two_tower_is_deterministic_and_does_not_depend_on_the_thread_count() {
    let rows = clustered(150, 3, 20, 4);
    let features = clustered_features(60, 20);
    let mut one = small_two_tower();
    one.two_tower.epochs = 3;
    one.two_tower.threads = Some(1);
    let mut three = one;
    three.two_tower.threads = Some(3);
    let a = train(&rows, &one, Some(&features)).unwrap();
    let b = train(&rows, &three, Some(&features)).unwrap();
    let again = train(&rows, &one, Some(&features)).unwrap();
    let tt = |m: &Model| {
        let t = m.two_tower().unwrap();
        [
            &t.user_emb,
            &t.item_emb,
            &t.hist_emb,
            &t.feat_emb,
            &t.candidates,
        ]
        .iter()
        .flat_map(|v| v.iter().map(|x| x.to_bits()))
        .collect::<Vec<u32>>()
    };
    assert!(tt(&a) == tt(&again), "same seed, different model");
    assert!(
        tt(&a) == tt(&b),
        "two-tower differs between 1 and 3 threads"
    );
    let mut other = one;
    other.two_tower.seed = 7;
    assert!(tt(&train(&rows, &other, Some(&features)).unwrap()) != tt(&a));
}

#[test]
fn a_cold_item_lands_among_items_of_its_category_and_designer() {
    let rows = clustered(200, 4, 25, 11);
    // 100 items in 4 groups of 25; designers of 5 items each.
    let features = clustered_features(100, 25);
    let mut spec = small_two_tower();
    spec.two_tower.item_id_dropout = 0.5;
    let model = train(&rows, &spec, Some(&features)).unwrap();
    let tt = model.two_tower().unwrap();
    // A new design of designer d11 (group 2), never bought.
    let v = tt
        .cold_item_vector(&["category=c2".into(), "designer=d11".into()])
        .unwrap();
    let mut scores = vec![0f32; model.items().len()];
    tt.scores_for(&v, &mut scores);
    let top = model.top_k(&scores, 10, &Default::default(), |_| true);
    let group = |i: u32| model.items().id(i)[1..].parse::<usize>().unwrap() / 25;
    assert!(
        top.iter().filter(|&&i| group(i) == 2).count() >= 9,
        "{:?}",
        top.iter().map(|&i| model.items().id(i)).collect::<Vec<_>>()
    );
    assert!(tt.cold_item_vector(&["category=unknown".into()]).is_none());
}

#[test]
fn a_design_added_after_training_is_scored_from_its_features() {
    let rows = clustered(200, 4, 25, 11);
    let features = clustered_features(100, 25);
    let mut spec = small_two_tower();
    spec.two_tower.item_id_dropout = 0.5;
    let model = train(&rows, &spec, Some(&features)).unwrap();
    let mug: Vec<String> = vec!["category=c2".into(), "designer=d11".into()];
    let other: Vec<String> = vec!["category=c0".into(), "designer=d1".into()];
    let unknown: Vec<String> = vec!["category=none-such".into()];
    let designs = [
        ("new-2", &mug[..]),
        ("new-0", &other[..]),
        ("new-x", &unknown[..]),
    ];
    let ids = |s: &[Scored]| s.iter().map(|s| s.item_id.clone()).collect::<Vec<_>>();
    let embedded: Vec<(&str, Vec<f32>)> = designs
        .iter()
        .filter_map(|(id, f)| Some((*id, model.embed_design(f)?)))
        .collect();
    // The design with no known feature has no vector.
    assert_eq!(embedded.len(), 2);
    let designs: Vec<(&str, &[f32])> = embedded.iter().map(|(i, v)| (*i, &v[..])).collect();
    assert!(!model.knows_design("new-2") && model.knows_design("i60"));
    // u2 is of group 2: its new design first.
    let for_u2 = model.score_designs(
        Anchor::Asker {
            user_id: Some("u2"),
            history: &[],
        },
        &designs,
    );
    assert_eq!(ids(&for_u2), ["new-2", "new-0"]);
    // On the catalogue's scale: it would enter u2's top 10 among known items.
    let top = model.recommend(&Request::user("u2", 10));
    assert!(for_u2[0].score > top[9].score, "{for_u2:?} against {top:?}");
    // A visitor known by their rows of group 0 only.
    let visitor: Vec<Interaction> = (0..3)
        .map(|i| Interaction::rating("v", format!("i{i}"), 1.0, 1_700_000_000 + i))
        .collect();
    let for_visitor = model.score_designs(
        Anchor::Asker {
            user_id: None,
            history: &visitor,
        },
        &designs,
    );
    assert_eq!(ids(&for_visitor), ["new-0", "new-2"]);
    // Beside an item of group 2, and beside another new design of group 2.
    let by_item = model.score_designs(Anchor::Item("i60"), &designs);
    assert_eq!(ids(&by_item), ["new-2", "new-0"]);
    let by_design = model.score_designs(Anchor::Features(&mug), &designs);
    assert_eq!(ids(&by_design), ["new-2", "new-0"]);
    // Its likes in the catalogue are its group's.
    let likes = model.similar_by_features(&mug, 10);
    let group = |id: &str| id[1..].parse::<usize>().unwrap() / 25;
    assert!(
        likes.iter().filter(|s| group(&s.item_id) == 2).count() >= 9,
        "{likes:?}"
    );
    assert!(model.similar_by_features(&unknown, 10).is_empty());
    // A model without features to embed answers nothing for them.
    let als = train(&rows, &small_als(), Some(&features)).unwrap();
    assert!(als.similar_by_features(&mug, 10).is_empty());
    assert!(als.embed_design(&mug).is_none());
    assert!(als.score_designs(Anchor::Item("i60"), &designs).is_empty());
}

#[test]
fn two_tower_warm_start_grows_its_vocabularies() {
    let split = temporal_split(clustered(300, 4, 25, 21), 0.8);
    let old_rows: Vec<Interaction> = split.train[..split.train.len() / 2]
        .iter()
        .filter(|r| {
            r.user_id[1..].parse::<usize>().unwrap() < 250
                && r.item_id[1..].parse::<usize>().unwrap() % 25 < 20
        })
        .cloned()
        .collect();
    let features = clustered_features(100, 25);
    let spec = small_two_tower();
    let old = train(&old_rows, &spec, Some(&features)).unwrap();
    let mut warm_spec = spec;
    warm_spec.two_tower.epochs = 3;
    let warm = Model::warm_start(&old, &split.train, &warm_spec, Some(&features)).unwrap();
    let (o, w) = (old.two_tower().unwrap(), warm.two_tower().unwrap());
    assert!(w.users.len() > o.users.len());
    assert!(w.items.len() > o.items.len());
    assert_eq!(w.users.ids()[..o.users.len()], *o.users.ids());
    assert_eq!(w.item_emb.len(), w.items.len() * w.dim());
    let pop = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    let (r, _) = evaluate::evaluate(
        &warm,
        &pop,
        &split.train,
        &split.test,
        Protocol::Warm,
        &EvalOptions::default(),
    )
    .unwrap();
    assert!(r.beats_baseline, "{:?} vs {:?}", r.metrics, r.baseline);
    let mut dims = warm_spec;
    dims.two_tower.dim = 8;
    assert!(Model::warm_start(&old, &split.train, &dims, None).is_err());
    assert!(Model::warm_start(&old, &split.train, &small_als(), None).is_err());
}

#[test]
fn cold_start_report_ranks_new_items_by_their_features() {
    let train_rows = clustered(200, 4, 25, 17);
    let mut features = clustered_features(100, 25);
    // 40 new designs, 10 per taste group, each bought by users of its group only.
    for k in 0..40 {
        features.insert(&format!("n{k}"), "category", &format!("c{}", k / 10));
    }
    let test: Vec<Interaction> = (0..200)
        .map(|u| {
            let k = (u % 4) * 10 + (u / 4) % 10;
            Interaction::rating(
                format!("u{u}"),
                format!("n{k}"),
                5.0,
                1_700_000_000 + u as i64,
            )
        })
        .collect();
    let model = train(&train_rows, &small_two_tower(), Some(&features)).unwrap();
    let r = evaluate::cold_start(&model, &train_rows, &test, &features).unwrap();
    assert_eq!((r.items, r.interactions), (40, 200));
    assert!(r.hit_rate_20 > 0.9, "{r:?}");
    assert!(r.hit_rate_20 > r.baseline_hit_rate_20 + 0.2, "{r:?}");
    let pop = train(&train_rows, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    assert!(evaluate::cold_start(&pop, &train_rows, &test, &features).is_none());
}

#[test]
fn a_new_design_known_by_its_features_has_similar_items_after_a_reload() {
    let rows = clustered(200, 4, 25, 11);
    let mut features = clustered_features(100, 25);
    features.insert("new", "category", "c3");
    features.insert("new", "designer", "d16");
    let model = train(&rows, &small_two_tower(), Some(&features)).unwrap();
    assert!(model.items().get("new").is_none(), "not in the catalogue");
    let back = Model::from_bytes(&model.to_bytes().unwrap()).unwrap();
    let sim = back.similar("new", 10);
    assert_eq!(sim, model.similar("new", 10));
    let group = |id: &str| id[1..].parse::<usize>().unwrap() / 25;
    assert!(
        sim.iter().filter(|s| group(&s.item_id) == 3).count() >= 9,
        "{sim:?}"
    );
    assert!(back.similar("unknown", 10).is_empty());
}

#[test]
fn fine_tuning_starts_from_the_shared_features_of_a_pretrained_model() {
    let features = clustered_features(100, 25);
    let public = clustered(200, 4, 25, 5);
    // Another data set: other users, other item ids, the same features.
    let shop: Vec<Interaction> = clustered(100, 4, 25, 6)
        .into_iter()
        .map(|mut r| {
            r.user_id = format!("shop-{}", r.user_id);
            r
        })
        .collect();
    let spec = small_two_tower();
    let pre = train(&public, &spec, Some(&features)).unwrap();
    let mut short = spec;
    short.two_tower.epochs = 0;
    let tuned = Model::fine_tune(&pre, &shop, &short, Some(&features)).unwrap();
    let (p, t) = (pre.two_tower().unwrap(), tuned.two_tower().unwrap());
    let emb = |m: &crate::TwoTower, name: &str| {
        let f = m.features.get(name).unwrap() as usize;
        m.feat_emb[f * 16..(f + 1) * 16].to_vec()
    };
    assert_eq!(emb(p, "designer=d3"), emb(t, "designer=d3"));
    assert_eq!(t.users.ids()[0], "shop-u0");
    assert!(Model::fine_tune(&pre, &shop, &small_als(), None).is_err());
}

/// The ranking `top_k` must reproduce: sort every candidate by score, then
/// popularity, then index (the selection it replaced).
fn top_k_by_sorting(
    model: &Model,
    scores: &[f32],
    k: usize,
    exclude: &HashSet<u32>,
    keep: impl Fn(u32) -> bool,
) -> Vec<u32> {
    let pop = &model.popular.scores;
    let mut cand: Vec<u32> = (0..scores.len() as u32)
        .filter(|&i| scores[i as usize].is_finite() && !exclude.contains(&i) && keep(i))
        .collect();
    cand.sort_by(|a, b| {
        let (sa, sb) = (scores[*a as usize], scores[*b as usize]);
        sb.total_cmp(&sa)
            .then(pop[*b as usize].total_cmp(&pop[*a as usize]))
            .then(a.cmp(b))
    });
    cand.truncate(k);
    cand
}

#[test]
fn top_k_equals_a_full_sort_with_ties_exclusions_and_filters() {
    let rows = clustered(60, 4, 25, 11);
    let model = train(&rows, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    let n = model.items().len();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for round in 0..300 {
        // Few distinct values, so ties are everywhere; some NaN and infinities.
        let scores: Vec<f32> = (0..n)
            .map(|_| match rng.random_range(0..20) {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                2 => -0.0,
                3 => 0.0,
                v => (v % 6) as f32 * if round % 2 == 0 { 1.0 } else { -0.5 },
            })
            .collect();
        let exclude: HashSet<u32> = (0..rng.random_range(0..10))
            .map(|_| rng.random_range(0..n as u32))
            .collect();
        let modulus = rng.random_range(1..4u32);
        let keep = |i: u32| i.is_multiple_of(modulus);
        for k in [0, 1, 3, 10, n - 1, n, n + 5] {
            assert_eq!(
                model.top_k(&scores, k, &exclude, keep),
                top_k_by_sorting(&model, &scores, k, &exclude, keep),
                "round {round}, k {k}"
            );
        }
    }
}

#[test]
fn a_model_that_does_not_need_the_history_answers_the_same_without_it() {
    let rows = clustered(80, 4, 15, 3);
    let als = train(&rows, &small_als(), None).unwrap();
    let history: Vec<Interaction> = rows.iter().filter(|r| r.user_id == "u5").cloned().collect();
    assert!(!als.needs_history(Some("u5")));
    assert!(als.needs_history(Some("stranger")) && als.needs_history(None));
    let with = Request {
        history: &history,
        ..Request::user("u5", 10)
    };
    assert_eq!(
        als.recommend(&with),
        als.recommend(&Request::user("u5", 10))
    );
    let popular = train(&rows, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    assert!(!popular.needs_history(Some("u5")));
    let ease = train(&rows, &small_ease(), None).unwrap();
    assert!(ease.needs_history(Some("u5")));
}

#[test]
fn the_retrieval_index_gives_the_exact_answer_with_rules_and_histories() {
    let rows = clustered(600, 8, 60, 11);
    let features = clustered_features(480, 60);
    let exclude: Vec<String> = (0..480).step_by(7).map(|i| format!("i{i}")).collect();
    for spec in [small_als(), small_two_tower()] {
        let model = train(&rows, &spec, Some(&features)).unwrap();
        // Below MIN_ITEMS a model builds none; force one over its vectors.
        assert!(model.retrieval_index().is_none());
        let (vectors, dim) = model.item_vectors().unwrap();
        let index = crate::ann::IvfIndex::build(vectors, dim, 17);
        for u in 0..600 {
            let user = format!("u{u}");
            let history: Vec<Interaction> = rows
                .iter()
                .filter(|r| r.user_id == user)
                .take(3)
                .cloned()
                .collect();
            let category = format!("c{}", u % 8);
            for req in [
                Request::user(&user, 10),
                Request::visitor(&history, 20),
                Request {
                    exclude: &exclude,
                    category: Some(&category),
                    ..Request::user(&user, 5)
                },
            ] {
                let exact = model.recommend(&req);
                let indexed = model.recommend(&Request {
                    index: Some(&index),
                    ..req
                });
                assert_eq!(indexed, exact, "{} for {user}", spec.kind);
            }
        }
    }
}

/// Sessions that walk between related designs: `items` designs on a ring, each
/// visitor starts anywhere and steps 1 or 2 designs on, `len` views, 30 s apart;
/// visitors one after another (so the last ones appear only in test).
pub(crate) fn walks(users: usize, items: usize, len: usize, seed: u64) -> Vec<Interaction> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows = Vec::new();
    for u in 0..users {
        let mut cur = rng.random_range(0..items);
        let start = 1_600_000_000i64 + u as i64 * 3600;
        for step in 0..len {
            rows.push(Interaction {
                user_id: format!("s{u}"),
                item_id: format!("i{cur}"),
                weight: 1.0,
                timestamp: start + step as i64 * 30,
                interaction_type: "view".into(),
                synthetic: false,
            });
            cur = (cur + 1 + rng.random_range(0..2)) % items;
        }
    }
    rows
}

const SESSION_KINDS: [ModelKind; 5] = [
    ModelKind::ItemKnn,
    ModelKind::Rp3beta,
    ModelKind::Sr,
    ModelKind::Vsknn,
    ModelKind::Blend,
];

#[test]
fn session_models_beat_popularity_under_the_session_protocol() {
    let split = temporal_split(walks(600, 200, 8, 3), 0.8);
    let pop = train(&split.train, &ModelSpec::new(ModelKind::Popular), None).unwrap();
    for kind in SESSION_KINDS {
        let model = train(&split.train, &ModelSpec::new(kind), None).unwrap();
        let (r, dump) = evaluate(
            &model,
            &pop,
            &split.train,
            &split.test,
            Protocol::Session,
            &EvalOptions::default(),
        )
        .unwrap();
        assert!(r.users_evaluated > 100, "{kind}: {}", r.users_evaluated);
        assert!(
            r.beats_baseline && r.metrics["ndcg@10"] > 2.0 * r.baseline["ndcg@10"],
            "{kind}: {:?} vs {:?}",
            r.metrics,
            r.baseline
        );
        assert!(dump.iter().all(|l| l.context.is_some()));
    }
}

#[test]
fn the_most_recent_context_item_weighs_most() {
    let signal = crate::Signal::default();
    // Rows out of order; b is seen twice, last at t = 9 (the most recent).
    let rows = [
        (0u32, 1.0, 5, false),
        (1, 1.0, 9, false),
        (2, 1.0, 7, false),
        (1, 1.0, 1, false),
    ];
    let ctx = crate::session::context(rows, &signal, 1.0);
    assert_eq!(ctx, vec![(1, 1.0), (2, 0.5), (0, 1.0 / 3.0)]);
    let flat = crate::session::context(rows, &signal, 0.0);
    assert!(flat.iter().all(|p| p.1 == 1.0));
    // SR on the ring: after i10 then i50, the successors of i50 come first.
    let rows = walks(400, 100, 8, 5);
    let model = train(&rows, &ModelSpec::new(ModelKind::Sr), None).unwrap();
    let history = vec![
        Interaction::rating("v", "i10", 1.0, 1),
        Interaction::rating("v", "i50", 1.0, 2),
    ];
    let recs = model.recommend(&Request::visitor(&history, 2));
    let ids: HashSet<&str> = recs.iter().map(|s| s.item_id.as_str()).collect();
    assert_eq!(ids, HashSet::from(["i51", "i52"]), "{recs:?}");
}

#[test]
fn session_models_reject_bad_settings_and_need_the_history() {
    let rows = walks(50, 30, 5, 1);
    for kind in SESSION_KINDS {
        let mut spec = ModelSpec::new(kind);
        spec.session.neighbours = 0;
        assert!(matches!(
            train(&rows, &spec, None),
            Err(crate::Error::Config { .. })
        ));
        let model = train(&rows, &ModelSpec::new(kind), None).unwrap();
        assert!(model.needs_history(Some("s1")));
        // Nothing known of a visitor: popularity answers.
        let recs = model.recommend(&Request::visitor(&[], 5));
        assert_eq!(recs, model.most_popular(5, None));
        assert_eq!(kind.as_str().parse::<ModelKind>().unwrap(), kind);
    }
}

#[test]
fn session_tuning_scores_visits_as_sessions_and_is_reproducible() {
    let rows = walks(400, 100, 8, 9);
    let opts = crate::tune::TuneOptions {
        seed: 3,
        max_trials: 6,
        ..Default::default()
    };
    let a = crate::tune::tune(&rows, &ModelSpec::new(ModelKind::Sr), None, &opts).unwrap();
    let b = crate::tune::tune(&rows, &ModelSpec::new(ModelKind::Sr), None, &opts).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.protocol, Protocol::Session);
    assert!(a.validation_users > 50, "{}", a.validation_users);
    assert!(a.best_ndcg10 >= a.trials[0].ndcg10);
    // A collaborative model tunes on warm unless told otherwise.
    let mut ease = small_ease();
    ease.ease.lambda = 1.0;
    let w = crate::tune::tune(&clustered(200, 4, 25, 13), &ease, None, &opts).unwrap();
    assert_eq!(w.protocol, Protocol::Warm);
    let s_opts = crate::tune::TuneOptions {
        protocol: Some(Protocol::Session),
        ..opts
    };
    let s = crate::tune::tune(&clustered(200, 4, 25, 13), &ease, None, &s_opts).unwrap();
    assert_eq!(s.protocol, Protocol::Session);
    assert!(s.validation_users > w.validation_users);
}

#[test]
fn a_blend_is_the_weighted_sum_of_its_scaled_graphs() {
    let rows = walks(300, 60, 6, 4);
    let data = crate::Interactions::build(&rows, &crate::Signal::default()).unwrap();
    let only_sr = crate::SessionConfig {
        blend: [0.0, 0.0, 2.0, 0.0],
        ..Default::default()
    };
    let ease = crate::EaseConfig::default();
    let b = crate::ItemGraph::blend(&rows, &data, &ease, &only_sr).unwrap();
    let sr = crate::ItemGraph::sequential_rules(&rows, &data, &only_sr).unwrap();
    // One part: each row is SR's row scaled to a largest weight of 2.
    assert_eq!(b.nnz(), sr.nnz());
    let mut out_b = vec![0f32; data.items.len()];
    let mut out_s = vec![0f32; data.items.len()];
    b.scores_for(&[(3, 1.0)], &mut out_b);
    sr.scores_for(&[(3, 1.0)], &mut out_s);
    let max = out_s.iter().fold(0f32, |a, &x| a.max(x));
    for (x, y) in out_b.iter().zip(&out_s) {
        assert!((x - 2.0 * y / max).abs() < 1e-5);
    }
    let mut none = only_sr;
    none.blend = [0.0; 4];
    assert!(crate::ItemGraph::blend(&rows, &data, &ease, &none).is_err());
}

#[test]
fn stan_weighs_a_neighbours_items_by_their_distance_from_the_shared_item() {
    // One training visit a → f; a visitor who saw c (and, earlier, a).
    let rows: Vec<Interaction> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .enumerate()
        .map(|(t, i)| Interaction::rating("s", *i, 1.0, t as i64))
        .collect();
    let data = crate::Interactions::build(&rows, &crate::Signal::default()).unwrap();
    let id = |i: &str| data.items.get(i).unwrap();
    let idx = |i: &str| id(i) as usize;
    let ctx = vec![(id("c"), 1.0), (id("a"), 0.5)]; // c the most recent
    let score = |decay: f32| {
        let config = crate::SessionConfig {
            position_decay: decay,
            ..Default::default()
        };
        let v = crate::Vsknn::fit(&rows, &data, &config).unwrap();
        let mut out = vec![0f32; data.items.len()];
        v.scores_for(&ctx, &mut out);
        out
    };
    let plain = score(0.0);
    assert!(plain[idx("d")] > 0.0 && plain[idx("d")] == plain[idx("f")]);
    let stan = score(1.0);
    let (b, d, e, f) = (
        stan[idx("b")],
        stan[idx("d")],
        stan[idx("e")],
        stan[idx("f")],
    );
    assert!(d > e && e > f && f > 0.0, "d {d} e {e} f {f}");
    assert!((b - d).abs() < 1e-6, "both one step from c: b {b} d {d}");
    assert!((d / e - 1f32.exp()).abs() < 1e-4);
    // An old artifact's order is never read without the decay; with it, the
    // reloaded model scores the same.
    let mut spec = ModelSpec::new(ModelKind::Vsknn);
    spec.session.position_decay = 1.0;
    let m = train(&rows, &spec, None).unwrap();
    let back = Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
    assert!(back == m);
}

#[test]
fn walking_popularity_ranks_as_scoring_every_item_does() {
    // Counts tie often: the order within a tie must be the top-k's.
    let rows = clustered(150, 3, 20, 5);
    let features = clustered_features(60, 20);
    let model = train(&rows, &ModelSpec::new(ModelKind::Popular), Some(&features)).unwrap();
    let scores = model.popular().scores().to_vec();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for round in 0..50 {
        let exclude: HashSet<u32> = (0..rng.random_range(0..20))
            .map(|_| rng.random_range(0..60))
            .collect();
        let category = (round % 2 == 0).then(|| rng.random_range(0..3u32));
        let keep = |i: u32| category.is_none_or(|c| model.popular.in_category(i, c));
        let k = rng.random_range(1..70);
        assert_eq!(
            model.top_k_popular(k, &exclude, keep),
            model.top_k(&scores, k, &exclude, keep),
            "k {k}, category {category:?}"
        );
    }
    // A stranger's answer is the walked one, scores included.
    let stranger = model.recommend(&Request::user("nobody", 10));
    let expected = model.top_k(&scores, 10, &HashSet::new(), |_| true);
    assert_eq!(
        stranger
            .iter()
            .map(|s| s.item_id.as_str())
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|&i| model.items().id(i))
            .collect::<Vec<_>>()
    );
    assert!(stranger
        .iter()
        .zip(&expected)
        .all(|(s, &i)| s.score == scores[i as usize]));
}
