//! `--tune`: a small, seeded hyper-parameter search on a validation split cut
//! from train exactly as the dataset was cut (5-minute dedup, time order, 80/20,
//! real rows only in the validation part), scored by NDCG@10 on the protocol the
//! model will answer: warm for the collaborative models, session for the session
//! models (or whichever [`TuneOptions::protocol`] names). The signal's half-life
//! is scanned first, then each model's hyper-parameters.
//!
//! Session validation: every user of the validation part with at least two
//! distinct known items is scored as a session (first half context, rest
//! relevant), *whether or not they had earlier rows*: their earlier rows are not
//! given to the model (the user is renamed, so no model knows them). Only users
//! new in the validation part would be too few on a small shop (37 on the
//! e-commerce log); every visit is a session the model could have answered.
//!
//! A plain grid is not enough: the anchors' best settings sat on its edges. So
//! each numeric hyper-parameter follows the slope on a log scale: ×4 (then ÷4)
//! while it improves, without bounds, then a second round at ×2 around the best.
//! Every trial is reported, so the curve can be read.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::evaluate::{cases, score, EvalOptions, Protocol};
use crate::{
    temporal_split, Error, Features, Interaction, Interactions, ItemGraph, Model, ModelKind,
    ModelSpec, Result,
};

/// Search settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TuneOptions {
    /// Seed of the models' initialisation (the split is deterministic).
    pub seed: u64,
    /// At most this many trainings.
    pub max_trials: usize,
    /// The protocol validation scores; `None`: the model's own (session for
    /// session models, warm for the others).
    #[serde(default)]
    pub protocol: Option<Protocol>,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            seed: 42,
            max_trials: 30,
            protocol: None,
        }
    }
}

/// One training of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The settings tried.
    pub spec: ModelSpec,
    /// Validation warm NDCG@10.
    pub ndcg10: f64,
    /// Validation warm Recall@20.
    pub recall20: f64,
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneReport {
    /// The best settings (train the final model on the whole train part with them).
    pub best: ModelSpec,
    /// Its validation NDCG@10.
    pub best_ndcg10: f64,
    /// Users in the validation protocol.
    pub validation_users: usize,
    /// The protocol validation scored.
    #[serde(default = "warm")]
    pub protocol: Protocol,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
}

fn warm() -> Protocol {
    Protocol::Warm
}

/// The prefix validation gives its users under the session protocol, so that no
/// model recognises them.
pub const VALIDATION_PREFIX: &str = "validation:";

/// The validation cases of `split` under `protocol` (see the module).
pub fn validation_cases(
    split: &crate::Split,
    protocol: Protocol,
    items: &crate::Vocab,
) -> Vec<crate::evaluate::Case> {
    match protocol {
        // A first visit is scored by who the visitor is: their ids stay.
        Protocol::Warm | Protocol::FirstVisit => cases(&split.train, &split.test, protocol, items),
        Protocol::Session => {
            let renamed: Vec<Interaction> = split
                .test
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    if !crate::is_anonymous(&r.user_id) {
                        r.user_id = format!("{VALIDATION_PREFIX}{}", r.user_id);
                    }
                    r
                })
                .collect();
            cases(&split.train, &renamed, Protocol::Session, items)
        }
    }
}

/// A blend trained from `members`, the member graphs built so far (keyed by
/// the signal and what each member depends on): only the missing ones are
/// built, so a search over the weights trains nothing.
fn blend_model(
    rows: &[Interaction],
    data: &Interactions,
    spec: &ModelSpec,
    features: Option<&Features>,
    members: &mut HashMap<String, ItemGraph>,
) -> Result<Model> {
    spec.session.validate()?;
    let mut keys: Vec<(f32, String)> = Vec::new();
    for (k, &w) in spec.session.blend.iter().enumerate() {
        if w <= 0.0 {
            continue;
        }
        let key = format!(
            "{:?} {}",
            spec.signal,
            ItemGraph::blend_member_key(k, &spec.ease, &spec.session)
        );
        if !members.contains_key(&key) {
            let g = ItemGraph::blend_member(k, rows, data, &spec.ease, &spec.session)?;
            members.insert(key.clone(), g);
        }
        keys.push((w, key));
    }
    let parts: Vec<(f32, &ItemGraph)> = keys.iter().map(|(w, k)| (*w, &members[k])).collect();
    let graph = ItemGraph::merge(&parts, data.items.len());
    Model::from_graph(rows, data, spec, features, graph)
}

#[derive(Clone, Copy)]
enum Param {
    AlsRegularization,
    AlsAlpha,
    EaseLambda,
    PopularHalfLife,
    TwoTowerTemperature,
    TwoTowerLearningRate,
    Neighbours,
    Shrink,
    Rp3Alpha,
    Rp3Beta,
    Steps,
    Sample,
    Recency,
    PositionDecay,
    Blend(usize),
}

fn get(spec: &ModelSpec, p: Param) -> f64 {
    match p {
        Param::AlsRegularization => spec.als.regularization as f64,
        Param::AlsAlpha => spec.als.alpha as f64,
        Param::EaseLambda => spec.ease.lambda as f64,
        Param::PopularHalfLife => spec.popular.half_life_days.unwrap_or(365.0),
        Param::TwoTowerTemperature => spec.two_tower.temperature as f64,
        Param::TwoTowerLearningRate => spec.two_tower.learning_rate as f64,
        Param::Neighbours => spec.session.neighbours as f64,
        Param::Shrink => spec.session.shrink as f64,
        Param::Rp3Alpha => spec.session.alpha as f64,
        Param::Rp3Beta => spec.session.beta as f64,
        Param::Steps => spec.session.steps as f64,
        Param::Sample => spec.session.sample as f64,
        Param::Recency => spec.session.recency as f64,
        Param::PositionDecay => spec.session.position_decay as f64,
        Param::Blend(k) => spec.session.blend[k] as f64,
    }
}

fn set(spec: &mut ModelSpec, p: Param, v: f64) {
    match p {
        Param::AlsRegularization => spec.als.regularization = v as f32,
        Param::AlsAlpha => spec.als.alpha = v as f32,
        Param::EaseLambda => spec.ease.lambda = v as f32,
        Param::PopularHalfLife => spec.popular.half_life_days = Some(v),
        Param::TwoTowerTemperature => spec.two_tower.temperature = v as f32,
        Param::TwoTowerLearningRate => spec.two_tower.learning_rate = v as f32,
        Param::Neighbours => spec.session.neighbours = (v.round() as usize).max(1),
        Param::Shrink => spec.session.shrink = v as f32,
        Param::Rp3Alpha => spec.session.alpha = v as f32,
        Param::Rp3Beta => spec.session.beta = v as f32,
        Param::Steps => spec.session.steps = (v.round() as usize).max(1),
        Param::Sample => spec.session.sample = (v.round() as usize).max(1),
        Param::Recency => spec.session.recency = v as f32,
        Param::PositionDecay => spec.session.position_decay = v as f32,
        Param::Blend(k) => spec.session.blend[k] = v as f32,
    }
}

/// Searches around `base` (its kind decides the hyper-parameters searched);
/// `features` are the items' (the two-tower model's candidate tower embeds them).
pub fn tune(
    train: &[Interaction],
    base: &ModelSpec,
    features: Option<&Features>,
    opts: &TuneOptions,
) -> Result<TuneReport> {
    let split = temporal_split(train.to_vec(), crate::split::TRAIN_FRACTION);
    let base_data = Interactions::build(&split.train, &base.signal)?;
    let protocol = opts.protocol.unwrap_or(if base.kind.is_session() {
        Protocol::Session
    } else {
        Protocol::Warm
    });
    let val = validation_cases(&split, protocol, &base_data.items);
    if val.is_empty() {
        return Err(Error::Input(format!(
            "tune: the validation split has no user to score under the {protocol:?} protocol"
        )));
    }
    let eval_opts = EvalOptions {
        bootstrap: 0,
        seed: 0,
    };
    let mut trials: Vec<Trial> = Vec::new();
    let members = std::cell::RefCell::new(HashMap::new());
    let run = |spec: &ModelSpec, trials: &mut Vec<Trial>| -> Result<f64> {
        if let Some(t) = trials.iter().find(|t| t.spec == *spec) {
            return Ok(t.ndcg10);
        }
        // The catalogue's order does not depend on the signal, so `val` stays valid.
        let rebuilt;
        let data = if spec.signal == base_data.signal {
            &base_data
        } else {
            rebuilt = Interactions::build(&split.train, &spec.signal)?;
            &rebuilt
        };
        let model = if spec.kind == ModelKind::Blend {
            blend_model(
                &split.train,
                data,
                spec,
                features,
                &mut members.borrow_mut(),
            )?
        } else {
            Model::fit(&split.train, data, spec, features)?
        };
        let s = score(&model, &val, &eval_opts);
        let (ndcg10, recall20) = (s.metrics["ndcg@10"], s.metrics["recall@20"]);
        trials.push(Trial {
            spec: *spec,
            ndcg10,
            recall20,
        });
        Ok(ndcg10)
    };
    let mut best = *base;
    best.als.seed = opts.seed;
    best.two_tower.seed = opts.seed;
    let params: &[Param] = match base.kind {
        ModelKind::Als => &[Param::AlsRegularization, Param::AlsAlpha],
        ModelKind::Ease => &[Param::EaseLambda],
        ModelKind::Popular => &[Param::PopularHalfLife],
        ModelKind::TwoTower => &[Param::TwoTowerTemperature, Param::TwoTowerLearningRate],
        ModelKind::ItemKnn => &[Param::Neighbours, Param::Shrink, Param::Recency],
        ModelKind::Rp3beta => &[
            Param::Rp3Beta,
            Param::Rp3Alpha,
            Param::Neighbours,
            Param::Recency,
        ],
        ModelKind::Sr => &[Param::Steps, Param::Recency, Param::Neighbours],
        ModelKind::Vsknn => &[
            Param::Neighbours,
            Param::Sample,
            Param::Recency,
            Param::PositionDecay,
        ],
        // Weights first: a trial that moves only them (or the recency) merges
        // the cached members, no training.
        ModelKind::Blend => &[
            Param::Blend(3),
            Param::Blend(2),
            Param::Blend(1),
            Param::Blend(0),
            Param::Recency,
            Param::EaseLambda,
            Param::Steps,
            Param::Shrink,
            Param::Rp3Beta,
            Param::Rp3Alpha,
            Param::Neighbours,
        ],
    };
    // The blend's trials are cheap: finer rounds while the budget lasts.
    let rounds: &[f64] = if base.kind == ModelKind::Blend {
        &[4.0, 2.0, std::f64::consts::SQRT_2, 1.189_207_115]
    } else {
        &[4.0, 2.0]
    };
    let mut best_score = run(&best, &mut trials)?;
    // The half-life first, on a coarse scale (none, a month … three years): it
    // moved NDCG@10 more than any hyper-parameter on the public data. The
    // two-tower model trains on which pairs exist, not on their values: no scan.
    if !matches!(base.kind, ModelKind::Popular | ModelKind::TwoTower) && !base.kind.is_session() {
        let start = best;
        for hl in [None, Some(30.0), Some(90.0), Some(365.0), Some(1095.0)] {
            if trials.len() >= opts.max_trials {
                break;
            }
            let mut cand = start;
            cand.signal.half_life_days = hl;
            let s = run(&cand, &mut trials)?;
            if s > best_score {
                best = cand;
                best_score = s;
            }
        }
    }
    // Item-kNN: the plain or the asymmetric cosine, binary or weighted input.
    if base.kind == ModelKind::ItemKnn {
        let start = best;
        for (a, weighted) in [(0.5, true), (0.25, false), (0.75, false)] {
            if trials.len() >= opts.max_trials {
                break;
            }
            let mut cand = start;
            cand.session.asymmetry = a;
            cand.session.weighted = weighted;
            let s = run(&cand, &mut trials)?;
            if s > best_score {
                best = cand;
                best_score = s;
            }
        }
    }
    // V-SKNN: plain, or STAN's positional weighting in the neighbours.
    if base.kind == ModelKind::Vsknn {
        let start = best;
        for decay in [0.1f32, 0.5, 2.0] {
            if trials.len() >= opts.max_trials {
                break;
            }
            let mut cand = start;
            cand.session.position_decay = decay;
            let s = run(&cand, &mut trials)?;
            if s > best_score {
                best = cand;
                best_score = s;
            }
        }
    }
    'rounds: for &step in rounds {
        for &p in params {
            for dir in [1.0f64, -1.0] {
                let mut moved = false;
                loop {
                    if trials.len() >= opts.max_trials {
                        break 'rounds;
                    }
                    let mut cand = best;
                    set(&mut cand, p, get(&best, p) * step.powf(dir));
                    let s = run(&cand, &mut trials)?;
                    if s > best_score {
                        best = cand;
                        best_score = s;
                        moved = true;
                    } else {
                        break;
                    }
                }
                if moved {
                    break; // the other direction was worse by construction
                }
            }
        }
    }
    Ok(TuneReport {
        best,
        best_ndcg10: best_score,
        validation_users: val.len(),
        protocol,
        trials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_is_reproducible_and_never_worse_than_where_it_started() {
        let rows = crate::tests::clustered(200, 4, 25, 13);
        let mut base = ModelSpec::new(ModelKind::Ease);
        base.ease.lambda = 1.0;
        let opts = TuneOptions {
            seed: 1,
            max_trials: 8,
            ..TuneOptions::default()
        };
        let a = tune(&rows, &base, None, &opts).unwrap();
        let b = tune(&rows, &base, None, &opts).unwrap();
        assert_eq!(a, b);
        assert!(a.trials.len() <= 8);
        assert!(a.best_ndcg10 >= a.trials[0].ndcg10);
        assert!(
            a.best.ease.lambda > 1.0,
            "λ = 1 is far too small for 50 users per item"
        );
    }

    #[test]
    fn the_blend_search_builds_each_member_once_and_trains_what_fit_trains() {
        let rows = crate::tests::clustered(200, 4, 25, 13);
        let data = Interactions::build(&rows, &crate::Signal::default()).unwrap();
        let mut members = HashMap::new();
        let mut spec = ModelSpec::new(ModelKind::Blend);
        spec.session.blend = [1.0, 0.0, 2.0, 0.5];
        let a = blend_model(&rows, &data, &spec, None, &mut members).unwrap();
        assert_eq!(members.len(), 3, "one graph per weighted member");
        assert!(a == Model::fit(&rows, &data, &spec, None).unwrap());
        // Other weights and recency: no member is built again.
        spec.session.blend = [0.25, 0.0, 4.0, 1.0];
        spec.session.recency = 3.0;
        let b = blend_model(&rows, &data, &spec, None, &mut members).unwrap();
        assert_eq!(members.len(), 3);
        assert!(b == Model::fit(&rows, &data, &spec, None).unwrap());
        // EASE's λ: only the EASE member is new.
        spec.ease.lambda *= 4.0;
        blend_model(&rows, &data, &spec, None, &mut members).unwrap();
        assert_eq!(members.len(), 4);
    }

    #[test]
    fn blend_tuning_reaches_its_budget_and_never_ends_worse() {
        let rows = crate::tests::clustered(200, 4, 25, 13);
        let opts = TuneOptions {
            seed: 1,
            max_trials: 40,
            ..TuneOptions::default()
        };
        let r = tune(&rows, &ModelSpec::new(ModelKind::Blend), None, &opts).unwrap();
        assert_eq!(r.protocol, Protocol::Session);
        assert!(r.trials.len() > 20, "{} trials", r.trials.len());
        assert!(r.best_ndcg10 >= r.trials[0].ndcg10);
    }

    #[test]
    fn two_tower_tuning_moves_temperature_and_learning_rate() {
        let rows = crate::tests::clustered(200, 4, 25, 13);
        let mut base = ModelSpec::new(ModelKind::TwoTower);
        base.two_tower.dim = 8;
        base.two_tower.epochs = 2;
        base.two_tower.batch_size = 64;
        let opts = TuneOptions {
            seed: 1,
            max_trials: 4,
            ..TuneOptions::default()
        };
        let r = tune(&rows, &base, None, &opts).unwrap();
        assert_eq!(r.trials.len(), 4);
        assert!(r.trials[1].spec.two_tower.temperature != base.two_tower.temperature);
        assert!(r.best_ndcg10 >= r.trials[0].ndcg10);
    }
}
