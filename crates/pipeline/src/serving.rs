//! Recommendations as the shop serves them: who is asking (a customer, whose
//! email is hashed exactly as in training, or a session, through its identity
//! link when it has one), their past (stored interactions plus the events sync
//! has not reached yet, so a visitor's first views count at once), the model's
//! ranking with what they bought left out, and the shop's catalogue rules over
//! it (hidden items never shown, pinned items at their place, boosted items
//! lifted). Models fall back to per-category popularity for strangers on their
//! own. HTTP and the command line both answer through here.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use manirec_models::ann::IvfIndex;
use manirec_models::evaluate::Protocol;
use manirec_models::{Anchor, Features, Model, Request, Scored};
use manirec_store::{session_user, ModelStatus, RuleKind, Store};

use crate::experiments::{assign, Variant};
use crate::identity::UserKey;
use crate::sync::Weights;
use crate::Result;

/// Interactions of a user read to rank for them.
const HISTORY: usize = 500;

/// Extra candidates ranked when boosts or the catalogue may reorder them.
const BOOST_POOL: usize = 3;

/// Candidates the model proposes per item asked, when the catalogue reorders
/// them (similar items, fresh sessions).
const SIMILAR_POOL: usize = 10;

/// A visitor with at most this many items is a fresh session: their
/// recommendations stay close to what they looked at.
const FRESH_SESSION: usize = 20;

/// Live designs kept per model: the newest the model was not trained on.
/// Older ones that never sold wait for the next training (two-tower then knows
/// them by their features).
const NEW_DESIGNS_KEPT: usize = 500;

/// A loaded model version, ready to answer.
pub struct LiveModel {
    /// Its registry version (`m3`).
    pub version: String,
    /// The model.
    pub model: Model,
    /// Its retrieval index, when its catalogue is large enough to need one:
    /// answers are the same with or without it, only faster.
    pub index: Option<IvfIndex>,
    /// The catalogue's designs this model does not know, for the catalogue it
    /// was last asked with (computed once per catalogue, not per request).
    new_designs: std::sync::Mutex<Arc<NewDesigns>>,
    /// Whether an account alone may answer (a customer with no history whom
    /// the model was not trained on): only when its `first_visit` report beat
    /// popularity ([`measured_to_win`]); otherwise such a customer gets
    /// popularity's answer, as any stranger.
    pub first_visits: bool,
}

/// The live designs (arrived by `products/*` webhooks) a model was not
/// trained on, newest first, each with its vector when the model can embed it
/// from its features (two-tower).
#[derive(Debug, Default)]
pub struct NewDesigns {
    /// The catalogue's fingerprint they were taken from.
    fingerprint: Option<u64>,
    designs: Vec<NewDesign>,
}

#[derive(Debug)]
struct NewDesign {
    id: String,
    category: String,
    vector: Option<Vec<f32>>,
}

impl NewDesigns {
    /// Those of `category` (all with `None`), newest first.
    fn of<'a>(&'a self, category: Option<&'a str>) -> impl Iterator<Item = &'a NewDesign> + 'a {
        self.designs
            .iter()
            .filter(move |d| category.is_none_or(|c| c == d.category))
    }
}

impl LiveModel {
    /// A model ready to serve many requests: builds its retrieval index
    /// (seconds on a large catalogue: call it off the async threads).
    pub fn new(version: String, model: Model) -> Self {
        let started = std::time::Instant::now();
        let index = model.retrieval_index();
        if let Some(index) = &index {
            tracing::info!(
                version = %version,
                items = index.len(),
                lists = index.lists(),
                seconds = started.elapsed().as_secs_f64(),
                "retrieval index built"
            );
        }
        LiveModel {
            version,
            model,
            index,
            new_designs: Default::default(),
            first_visits: false,
        }
    }

    /// The same, answering first visits from accounts when `yes` (see
    /// [`LiveModel::first_visits`]).
    pub fn answering_first_visits(mut self, yes: bool) -> Self {
        self.first_visits = yes;
        self
    }

    /// A model for a few answers (the command line): no retrieval index.
    pub fn without_index(version: String, model: Model) -> Self {
        LiveModel {
            version,
            model,
            index: None,
            new_designs: Default::default(),
            first_visits: false,
        }
    }

    /// The designs of `catalogue` this model was not trained on (see
    /// [`NewDesigns`]), computed on the first ask with this catalogue.
    pub fn new_designs(&self, catalogue: &Catalogue) -> Arc<NewDesigns> {
        let cached = || {
            self.new_designs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let current = cached().clone();
        if current.fingerprint == Some(catalogue.fingerprint) {
            return current;
        }
        // Computed outside the lock: requests asking meanwhile wait for nothing.
        let designs = catalogue
            .live
            .iter()
            .filter(|(id, _)| !self.model.knows_design(id))
            .take(NEW_DESIGNS_KEPT)
            .map(|(id, category)| NewDesign {
                id: id.clone(),
                category: category.clone(),
                vector: self.model.embed_design(catalogue.features.get(id)),
            })
            .collect();
        let fresh = Arc::new(NewDesigns {
            fingerprint: Some(catalogue.fingerprint),
            designs,
        });
        *cached() = fresh.clone();
        fresh
    }
}

/// The shop's rules over every model's answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogRules {
    /// Never shown: hidden by a rule, or unpublished in the shop.
    pub hidden: HashSet<String>,
    /// `(item, position)`, 0-based, by position.
    pub pins: Vec<(String, usize)>,
    /// Item → strength (1.0 lifts the last candidate to the first place).
    pub boosts: HashMap<String, f32>,
}

impl CatalogRules {
    /// The rules in force.
    pub fn load(store: &Store) -> Result<Self> {
        let mut rules = CatalogRules {
            hidden: store.hidden_items()?.into_iter().collect(),
            ..CatalogRules::default()
        };
        for r in store.catalog_rules()? {
            match r.rule {
                RuleKind::Hide => {}
                RuleKind::Pin => rules.pins.push((r.item_id, (r.value as usize).max(1) - 1)),
                RuleKind::Boost => {
                    rules.boosts.insert(r.item_id, r.value as f32);
                }
            }
        }
        rules.pins.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        Ok(rules)
    }
}

/// What the shop's catalogue says about how items relate: a design's designer
/// and category. A print-on-demand shop's "similar" is first of all "more of
/// this designer, more of this kind of product"; the model orders within that.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalogue {
    category: HashMap<String, u32>,
    designer: HashMap<String, u32>,
    /// Designer → their designs.
    designs: HashMap<u32, Vec<String>>,
    /// Category id → its name (when the shop's `categories` table gave one).
    categories: std::collections::BTreeMap<String, Option<String>>,
    /// Design → its category id.
    item_category: HashMap<String, String>,
    /// The designs that arrived live (`products/*` webhooks) and may be shown,
    /// with their category id, the last written first: offered before a model
    /// knows them.
    live: Vec<(String, String)>,
    /// The live designs' features, named as at training: a two-tower model
    /// embeds a design it was not trained on from them.
    features: Features,
    /// A hash of `live` and `features`: what a model's [`NewDesigns`] were
    /// computed from.
    fingerprint: u64,
}

/// A category asked by a name or id the shop does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCategory {
    /// What was asked.
    pub asked: String,
    /// The closest categories, as `Name (id)`, best first.
    pub close: Vec<String>,
}

impl std::fmt::Display for UnknownCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown category {:?}", self.asked)?;
        if self.close.is_empty() {
            write!(f, "; no category of the shop is close")
        } else {
            write!(f, "; did you mean {}?", self.close.join(", "))
        }
    }
}

/// A category name as people type it: case, spaces and a plural `s` aside.
fn fold(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    let trimmed = lower.strip_suffix('s').unwrap_or(&lower);
    trimmed.chars().filter(|c| c.is_alphanumeric()).collect()
}

impl Catalogue {
    /// The catalogue of the shop mirror; `hidden` (the rules' hidden and
    /// unpublished designs, [`CatalogRules::hidden`]) never take a new design's place.
    pub fn load(store: &Store, hidden: &HashSet<String>) -> Result<Self> {
        let mut names: HashMap<String, u32> = HashMap::new();
        let mut intern = |name: String| {
            let next = names.len() as u32;
            *names.entry(name).or_insert(next)
        };
        let mut c = Catalogue::default();
        let mut live: Vec<(i64, String, String)> = Vec::new();
        for category in store.categories()? {
            c.categories.insert(category.id, category.name);
        }
        for item in store.item_attributes()? {
            if item.live {
                crate::training::add_item_features(&mut c.features, &item);
            }
            if let Some(category) = item.category_id {
                c.category
                    .insert(item.item_id.clone(), intern(format!("c:{category}")));
                if item.live && !hidden.contains(&item.item_id) {
                    live.push((item.updated_at, item.item_id.clone(), category.clone()));
                }
                if item.kind == "end" {
                    c.item_category
                        .insert(item.item_id.clone(), category.clone());
                }
                c.categories.entry(category).or_insert(None);
            }
            if let Some(designer) = item.designer_id.filter(|d| !d.is_empty()) {
                let id = intern(format!("d:{designer}"));
                c.designer.insert(item.item_id.clone(), id);
                c.designs.entry(id).or_default().push(item.item_id);
            }
        }
        // Newest first: the designs written last by their webhooks.
        live.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        c.live = live
            .into_iter()
            .map(|(_, id, category)| (id, category))
            .collect();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for (id, category) in &c.live {
            (id, category, c.features.get(id)).hash(&mut hasher);
        }
        c.fingerprint = hasher.finish();
        Ok(c)
    }

    /// The category id of `asked`, a category id or name (any case, singular
    /// or plural: `mugs`, `Mugs`, `mug`). A shop whose catalogue names no
    /// category at all (interactions only) gets `asked` back as it is.
    pub fn resolve_category(&self, asked: &str) -> std::result::Result<String, UnknownCategory> {
        let asked = asked.trim();
        if self.categories.is_empty() || self.categories.contains_key(asked) {
            return Ok(asked.to_owned());
        }
        let folded = fold(asked);
        let named = |f: &dyn Fn(&str) -> bool| {
            self.categories
                .iter()
                .find(|(_, name)| name.as_deref().is_some_and(f))
                .map(|(id, _)| id.clone())
        };
        if let Some(id) = named(&|n| n.eq_ignore_ascii_case(asked))
            .or_else(|| named(&|n| !folded.is_empty() && fold(n) == folded))
        {
            return Ok(id);
        }
        let mut scored: Vec<(f64, String)> = self
            .categories
            .iter()
            .map(|(id, name)| {
                // Typos (jaro-winkler) and swapped letters (damerau-levenshtein).
                let close = |a: &str, b: &str| {
                    strsim::jaro_winkler(a, b).max(strsim::normalized_damerau_levenshtein(a, b))
                };
                let lower = asked.to_lowercase();
                let by_id = close(&lower, &id.to_lowercase());
                let by_name = name.as_deref().map_or(0.0, |n| {
                    close(&folded, &fold(n)).max(close(&lower, &n.to_lowercase()))
                });
                let shown = match name {
                    Some(n) => format!("{n} ({id})"),
                    None => id.clone(),
                };
                (by_id.max(by_name), shown)
            })
            .filter(|(score, _)| *score >= 0.7)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Err(UnknownCategory {
            asked: asked.to_owned(),
            close: scored.into_iter().take(5).map(|(_, s)| s).collect(),
        })
    }

    /// 0 unrelated, 1 same category, 2 same designer, 3 both.
    fn relatedness(&self, a: &str, b: &str) -> u8 {
        let same =
            |m: &HashMap<String, u32>| matches!((m.get(a), m.get(b)), (Some(x), Some(y)) if x == y);
        2 * u8::from(same(&self.designer)) + u8::from(same(&self.category))
    }

    /// The other designs of `item`'s designer.
    fn same_designer<'a>(&'a self, item: &str) -> impl Iterator<Item = &'a String> {
        self.designer
            .get(item)
            .and_then(|d| self.designs.get(d))
            .into_iter()
            .flatten()
    }
}

/// Model candidates reordered by how they relate to `anchors` (catalogue
/// tier first, the model's order within a tier). Scores become tier + the
/// model's score scaled into [0, 1), so they stay comparable within the answer.
fn by_relatedness(mut pool: Vec<Scored>, anchors: &[&str], catalogue: &Catalogue) -> Vec<Scored> {
    let (lo, hi) = pool.iter().fold((f32::MAX, f32::MIN), |(lo, hi), s| {
        (lo.min(s.score), hi.max(s.score))
    });
    let spread = if hi > lo { hi - lo } else { 1.0 };
    for s in &mut pool {
        let tier = anchors
            .iter()
            .map(|a| catalogue.relatedness(&s.item_id, a))
            .max()
            .unwrap_or(0);
        let scaled = ((s.score - lo) / spread).clamp(0.0, 1.0) * 0.999;
        s.score = f32::from(tier) + if s.score.is_finite() { scaled } else { 0.0 };
    }
    pool.sort_by(|a, b| b.score.total_cmp(&a.score));
    pool
}

/// A registered version's NDCG@10 at training under `protocol` (`session` or
/// `first_visit`, kept in its metrics beside the warm report), when it beat
/// popularity there (its lift interval above zero).
fn protocol_ndcg(v: &manirec_store::ModelVersion, protocol: Protocol) -> Option<f64> {
    let m: serde_json::Value = serde_json::from_str(v.metrics.as_deref()?).ok()?;
    let key = serde_json::to_value(protocol).ok()?;
    let s = &m[key.as_str()?];
    if s["beats_baseline"].as_bool() != Some(true) {
        return None;
    }
    s["metrics"]["ndcg@10"].as_f64()
}

/// Whether `v`'s report under `protocol`, measured at training, beat popularity.
pub fn measured_to_win(v: &manirec_store::ModelVersion, protocol: Protocol) -> bool {
    protocol_ndcg(v, protocol).is_some()
}

/// The version that answers one kind of request instead of the active one:
/// anonymous sessions (`Protocol::Session`) or customers the active version has
/// never seen (`Protocol::FirstVisit`). Of the versions trained on the active
/// model's dataset (the shop's own data, evaluated on the same test part) and
/// not retired, the one with the best NDCG@10 under that protocol measured at
/// training, when it beat popularity there and did better than the active
/// version. `None`: the active version answers those too. The measurement
/// decides, not the kind.
pub fn version_for(
    store: &Store,
    protocol: Protocol,
) -> Result<Option<manirec_store::ModelVersion>> {
    let Some(active) = store.active_model_version()? else {
        return Ok(None);
    };
    let floor = protocol_ndcg(&active, protocol).unwrap_or(f64::NEG_INFINITY);
    let best = store
        .model_versions()?
        .into_iter()
        .filter(|v| {
            v.dataset_version == active.dataset_version
                && matches!(v.status, ModelStatus::Candidate | ModelStatus::Active)
                && v.version != active.version
        })
        .filter_map(|v| protocol_ndcg(&v, protocol).map(|n| (n, v)))
        .filter(|(n, _)| *n > floor)
        .max_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then(b.1.created_at.cmp(&a.1.created_at))
        });
    Ok(best.map(|(_, v)| v))
}

/// Who a request is for, as the training data names them; nobody (a
/// stranger) for a shopper erased on request, whose factors the model may
/// still hold until it is retrained.
pub fn training_user(
    store: &Store,
    key: &UserKey,
    user_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<Option<String>> {
    let user = if let Some(user) = user_id.filter(|u| !u.trim().is_empty()) {
        key.user_id(user)
    } else {
        let Some(session) = session_id.filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        let anonymous = session_user(session.trim());
        let linked = store.linked_users(std::slice::from_ref(&anonymous))?;
        linked.get(&anonymous).cloned().unwrap_or(anonymous)
    };
    if store.forgotten_among(&[&user])?.is_empty() {
        Ok(Some(user))
    } else {
        Ok(None)
    }
}

/// What a request ranks from: the user's recent history, and everything they
/// ever bought (left out of the answer).
#[derive(Debug, Clone, Default)]
pub struct Past {
    /// Recent interactions, in the models' terms.
    pub history: Vec<manirec_models::Interaction>,
    /// Items bought.
    pub bought: Vec<String>,
}

/// The past of a training user: their interactions (unless the model ranks
/// them without, see `Model::needs_history`), what they bought, and their events
/// not yet synced (weighted as sync will weigh them).
pub fn past(store: &Store, user: &str, weights: &Weights, with_history: bool) -> Result<Past> {
    let stored = if with_history {
        store.user_history(user, HISTORY)?
    } else {
        Vec::new()
    };
    // Read newest first; kept oldest first, as training's sequences are (rows
    // of one second in item order), so session models find the same last item.
    let mut history: Vec<manirec_models::Interaction> = stored
        .into_iter()
        .rev()
        .map(|r| manirec_models::Interaction {
            user_id: user.to_owned(),
            item_id: r.item_id,
            weight: r.rating as f32,
            timestamp: r.timestamp,
            interaction_type: r.interaction_type,
            synthetic: r.synthetic,
        })
        .collect();
    let mut bought = store.purchased_items(user)?;
    for e in store.unsynced_events(user, HISTORY)? {
        let weight = weights.of(&e.event_type);
        if weight <= 0.0 {
            continue;
        }
        if e.event_type == "purchase" {
            bought.push(e.product_id.clone());
        }
        history.push(manirec_models::Interaction {
            user_id: user.to_owned(),
            item_id: e.product_id,
            weight: weight as f32,
            timestamp: e.timestamp_ms.div_euclid(1000),
            interaction_type: e.event_type,
            synthetic: false,
        });
    }
    Ok(Past { history, bought })
}

/// What answers recommendations at one moment: the active version, the
/// versions that measured best for sessions and first visits, the running
/// experiment's two, and the shop's rules. The server keeps one and swaps it
/// whole; `manirec recommend` reads one for a single answer.
#[derive(Default)]
pub struct Serving {
    /// The active version.
    pub active: Option<Arc<LiveModel>>,
    /// The version that measured best under the session protocol on the
    /// active version's dataset, when not the active one ([`version_for`]):
    /// it answers anonymous sessions outside experiments.
    pub session: Option<Arc<LiveModel>>,
    /// Likewise under the first-visit protocol: it answers, outside
    /// experiments, a customer with no history whom it knows by their account
    /// and the chosen model was not trained on (see [`Serving::for_first_visit`]).
    pub first_visit: Option<Arc<LiveModel>>,
    /// The running experiment and its arms' models.
    pub experiment: Option<RunningExperiment>,
    /// The shop's rules.
    pub rules: Arc<CatalogRules>,
    /// Designers and categories.
    pub catalogue: Arc<Catalogue>,
}

/// An experiment being served.
pub struct RunningExperiment {
    /// As stored.
    pub experiment: manirec_store::Experiment,
    /// The control's model.
    pub control: Arc<LiveModel>,
    /// The treatment's model.
    pub treatment: Arc<LiveModel>,
}

/// The model that answers a shopper, and the experiment and arm it answers
/// in (`None`: outside any experiment, as `control`).
pub type Chosen = (Arc<LiveModel>, Option<i64>, Variant);

impl Serving {
    /// The model, experiment and arm for a shopper (`unit`: their training id).
    /// Without a running experiment, or for a stranger, the active model
    /// answers as `control` outside any experiment.
    pub fn choose(&self, unit: Option<&str>) -> Option<Chosen> {
        if let (Some(exp), Some(unit)) = (&self.experiment, unit) {
            let variant = assign(&exp.experiment, unit);
            let model = match variant {
                Variant::Control => &exp.control,
                Variant::Treatment => &exp.treatment,
            };
            return Some((model.clone(), Some(exp.experiment.id), variant));
        }
        if let (Some(s), Some(unit)) = (&self.session, unit) {
            // An anonymous visitor: a session or a device not linked to a customer.
            if is_visitor(unit) {
                return Some((s.clone(), None, Variant::Control));
            }
        }
        self.active.clone().map(|m| (m, None, Variant::Control))
    }

    /// The model for `unit`'s first visit instead of `chosen` (see
    /// [`Serving::first_visit`]): a customer (not a session or device) whom
    /// `chosen` was not trained on and the first-visit model knows by their
    /// account. It is theirs only when they have no history either, which
    /// [`route`] checks.
    pub fn for_first_visit(&self, unit: &str, chosen: &LiveModel) -> Option<Arc<LiveModel>> {
        let model = self.first_visit.as_ref()?;
        (!is_visitor(unit) && !chosen.model.knows_user(unit) && model.model.knows_account(unit))
            .then(|| model.clone())
    }
}

/// Whether a training id is an anonymous visitor's (a session or a device
/// not linked to a customer).
fn is_visitor(unit: &str) -> bool {
    unit.starts_with("session:") || unit.starts_with("device:")
}

/// The versions [`Serving`] is made of, as the registry names them.
pub struct ServingVersions {
    /// The active version.
    pub active: Option<manirec_store::ModelVersion>,
    /// [`version_for`] sessions.
    pub session: Option<manirec_store::ModelVersion>,
    /// [`version_for`] first visits.
    pub first_visit: Option<manirec_store::ModelVersion>,
    /// The running experiment, and its arms' versions (`None` where one is
    /// missing from the registry).
    pub experiment: Option<(
        manirec_store::Experiment,
        Option<manirec_store::ModelVersion>,
        Option<manirec_store::ModelVersion>,
    )>,
}

impl ServingVersions {
    /// Every version named, each once, the active one first.
    pub fn each(&self) -> Vec<&manirec_store::ModelVersion> {
        let mut each: Vec<&manirec_store::ModelVersion> = Vec::new();
        let arms = self.experiment.iter().flat_map(|(_, c, t)| [c, t]);
        for v in [&self.active, &self.session, &self.first_visit]
            .into_iter()
            .chain(arms)
            .flatten()
        {
            if !each.iter().any(|e| e.version == v.version) {
                each.push(v);
            }
        }
        each
    }

    /// Whether `v` is the active version.
    pub fn is_active(&self, v: &manirec_store::ModelVersion) -> bool {
        self.active.as_ref().is_some_and(|a| a.version == v.version)
    }

    /// What the registry says serves now.
    pub fn read(store: &Store) -> Result<ServingVersions> {
        let experiment = match store.running_experiment()? {
            Some(e) => {
                let control = store.model_version(&e.control)?;
                let treatment = store.model_version(&e.treatment)?;
                Some((e, control, treatment))
            }
            None => None,
        };
        Ok(ServingVersions {
            active: store.active_model_version()?,
            session: version_for(store, Protocol::Session)?,
            first_visit: version_for(store, Protocol::FirstVisit)?,
            experiment,
        })
    }
}

impl Serving {
    /// The snapshot of `versions`, their models taken from `models` (by
    /// version; the caller loaded every one of [`ServingVersions::each`] it
    /// could, and said why of those it could not). A version other than the
    /// active one that is not there leaves its requests to the active one.
    pub fn assemble(
        versions: &ServingVersions,
        rules: Arc<CatalogRules>,
        catalogue: Arc<Catalogue>,
        models: &HashMap<String, Arc<LiveModel>>,
    ) -> Serving {
        let model = |v: &Option<manirec_store::ModelVersion>| {
            v.as_ref().and_then(|v| models.get(&v.version)).cloned()
        };
        let experiment = match &versions.experiment {
            Some((e, control, treatment)) => match (model(control), model(treatment)) {
                (Some(control), Some(treatment)) => Some(RunningExperiment {
                    experiment: e.clone(),
                    control,
                    treatment,
                }),
                _ => {
                    tracing::error!(experiment = e.id, "an arm's model is missing from the registry or did not load; serving the active model to everyone");
                    None
                }
            },
            None => None,
        };
        Serving {
            active: model(&versions.active),
            session: model(&versions.session),
            first_visit: model(&versions.first_visit),
            experiment,
            rules,
            catalogue,
        }
    }
}

/// Who a request is for and what answers it: see [`route`].
pub struct Routed {
    /// The shopper's training id (`None`: a stranger).
    pub user: Option<String>,
    /// What is known of them (no history when the chosen model ranks without).
    pub past: Past,
    /// The model that answers (`None`: no model serves).
    pub chosen: Option<Chosen>,
}

/// Routes one request: the shopper as the training data names them, the
/// version that answers them (the experiment's arm; else the session version
/// for an anonymous visitor; else the active one, or the first-visit version
/// for a customer it knows by their account, whom the chosen model was not
/// trained on and of whom nothing is known yet that the model could read),
/// and their past.
pub fn route(
    store: &Store,
    serving: &Serving,
    key: &UserKey,
    user_id: Option<&str>,
    session_id: Option<&str>,
    weights: &Weights,
) -> Result<Routed> {
    let user = training_user(store, key, user_id, session_id)?;
    let mut chosen = serving.choose(user.as_deref());
    let known = match (&user, &chosen) {
        (Some(u), Some((live, _, _))) => {
            past(store, u, weights, live.model.needs_history(Some(u)))?
        }
        _ => Past::default(),
    };
    if let (Some(u), Some((live, None, _))) = (&user, &mut chosen) {
        if let Some(first) = serving.for_first_visit(u, live) {
            // `known` holds no history when the chosen model had no use for it.
            let first_time = match live.model.needs_history(Some(u)) {
                true => !first.model.knows_any(&known.history),
                false => !first
                    .model
                    .knows_any(&past(store, u, weights, true)?.history),
            };
            if first_time {
                *live = first;
            }
        }
    }
    Ok(Routed {
        user,
        past: known,
        chosen,
    })
}

/// A recommendation request.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The shopper's training id, when known.
    pub user: Option<&'a str>,
    /// Their past.
    pub past: &'a Past,
    /// How many items.
    pub k: usize,
    /// Only this category.
    pub category: Option<&'a str>,
    /// Items the caller does not want.
    pub exclude: &'a [String],
}

/// Top `k` for the asker: bought, excluded and hidden items left out, boosts
/// and pins applied.
pub fn recommend(
    live: &LiveModel,
    ask: &Ask<'_>,
    rules: &CatalogRules,
    catalogue: &Catalogue,
) -> Vec<Scored> {
    let mut excluded: Vec<String> = ask.exclude.to_vec();
    excluded.extend(ask.past.bought.iter().cloned());
    excluded.extend(rules.hidden.iter().cloned());
    let left_out: HashSet<&str> = excluded.iter().map(String::as_str).collect();
    // An anonymous session that just looked at a few designs: related designs
    // first. Customers and longer histories are the model's alone.
    let fresh = ask.user.is_some_and(|u| u.starts_with("session:"))
        && !ask.past.history.is_empty()
        && ask.past.history.len() <= FRESH_SESSION;
    let pool = if fresh {
        ask.k * SIMILAR_POOL
    } else if !rules.boosts.is_empty() {
        ask.k * BOOST_POOL
    } else {
        ask.k
    };
    // A customer known by nothing but an account is a stranger unless the
    // model's accounts measured to win (for the list and new designs alike).
    // Cheapest test first: most models know no account, and the history is
    // walked only for a customer whose account the model embeds.
    let user_id = ask.user.filter(|&u| {
        live.first_visits
            || !live.model.knows_account(u)
            || live.model.knows_user(u)
            || live.model.knows_any(&ask.past.history)
    });
    let mut ranked = live.model.recommend(&Request {
        user_id,
        history: &ask.past.history,
        k: pool,
        exclude: &excluded,
        exclude_history: fresh,
        category: ask.category,
        index: live.index.as_ref(),
    });
    // Designs added since training, when the model can embed them (two-tower),
    // compete for the places by their score; a fresh session's own items stay
    // out, as the model leaves them out.
    let news = live.new_designs(catalogue);
    let seen: HashSet<&str> = match fresh {
        true => ask
            .past
            .history
            .iter()
            .map(|r| r.item_id.as_str())
            .collect(),
        false => HashSet::new(),
    };
    let designs: Vec<(&str, &[f32])> = news
        .of(ask.category)
        .filter_map(|d| Some((d.id.as_str(), d.vector.as_deref()?)))
        .filter(|(id, _)| !left_out.contains(id) && !seen.contains(id))
        .collect();
    if !designs.is_empty() {
        let anchor = Anchor::Asker {
            user_id,
            history: &ask.past.history,
        };
        ranked.extend(live.model.score_designs(anchor, &designs));
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        ranked.truncate(pool);
    }
    if fresh {
        let anchors: Vec<&str> = ask
            .past
            .history
            .iter()
            .map(|r| r.item_id.as_str())
            .collect();
        ranked = by_relatedness(ranked, &anchors, catalogue);
    }
    let allowed = |item: &str| {
        !left_out.contains(item)
            && ask
                .category
                .is_none_or(|c| category_of(&live.model, item) == Some(c))
    };
    let ranked = apply_rules(ranked, ask.k, rules, allowed);
    match ask.category {
        // Those the model scored competed already: only the others are given places.
        Some(c) => with_new_designs(ranked, ask.k, &news, c, |d| {
            d.vector.is_none() && !left_out.contains(d.id.as_str()) && !seen.contains(d.id.as_str())
        }),
        None => ranked,
    }
}

/// A category's answer with its live designs that no model knows yet (a
/// design added today; those `offered` says may come) given the last places:
/// up to a quarter of them, at least one, each scored just below the list's
/// last item.
fn with_new_designs(
    mut ranked: Vec<Scored>,
    k: usize,
    news: &NewDesigns,
    category: &str,
    offered: impl Fn(&NewDesign) -> bool,
) -> Vec<Scored> {
    let fresh: Vec<&String> = news
        .of(Some(category))
        .filter(|d| offered(d) && !ranked.iter().any(|s| s.item_id == d.id))
        .map(|d| &d.id)
        .take((k / 4).max(1))
        .collect();
    if fresh.is_empty() {
        return ranked;
    }
    ranked.truncate(k.saturating_sub(fresh.len()));
    let mut score = ranked.last().map_or(0.0, |s| s.score);
    for item in fresh {
        score -= 1e-3;
        ranked.push(Scored {
            item_id: item.clone(),
            score,
        });
    }
    ranked
}

/// Items like `item`: the model's neighbours, same designer and category
/// first (other designs of the designer come in even before they have any
/// history), hidden ones left out.
pub fn similar(
    live: &LiveModel,
    item: &str,
    k: usize,
    rules: &CatalogRules,
    catalogue: &Catalogue,
) -> Vec<Scored> {
    let mut pool = live.model.similar(item, k * SIMILAR_POOL);
    let category = catalogue.item_category.get(item);
    let features = catalogue.features.get(item);
    if pool.is_empty() {
        // A design no model knows yet (it arrived today): a two-tower model
        // finds its likes from its features.
        pool = live.model.similar_by_features(features, k * SIMILAR_POOL);
    }
    if pool.is_empty() {
        // Other models: its category's best sellers are its likes until it
        // has a history.
        if let Some(c) = category {
            pool = live
                .model
                .most_popular(k * SIMILAR_POOL, Some(c))
                .into_iter()
                .filter(|s| s.item_id != item)
                .collect();
        }
    }
    let floor = pool.iter().map(|s| s.score).fold(0.0f32, f32::min) - 1.0;
    let mut known: HashSet<String> = pool.iter().map(|s| s.item_id.clone()).collect();
    known.insert(item.to_owned());
    let news = live.new_designs(catalogue);
    let newcomers: Vec<String> = category
        .map(|c| news.of(Some(c)).map(|d| d.id.clone()).collect())
        .unwrap_or_default();
    let extra: Vec<String> = catalogue
        .same_designer(item)
        .cloned()
        .chain(newcomers)
        .filter(|i| !known.contains(i))
        .collect();
    // Newcomers the model can embed (two-tower) by their likeness to `item`,
    // the others below every model candidate.
    let wanted: HashSet<&str> = extra.iter().map(String::as_str).collect();
    let designs: Vec<(&str, &[f32])> = news
        .of(None)
        .filter(|d| wanted.contains(d.id.as_str()))
        .filter_map(|d| Some((d.id.as_str(), d.vector.as_deref()?)))
        .collect();
    let anchor = if live.model.knows_design(item) {
        Anchor::Item(item)
    } else {
        Anchor::Features(features)
    };
    let likeness: HashMap<String, f32> = live
        .model
        .score_designs(anchor, &designs)
        .into_iter()
        .map(|s| (s.item_id, s.score))
        .collect();
    for i in extra {
        if known.insert(i.clone()) {
            let score = likeness.get(&i).copied().unwrap_or(floor);
            pool.push(Scored { item_id: i, score });
        }
    }
    pool.retain(|s| !rules.hidden.contains(&s.item_id));
    let mut out = by_relatedness(pool, &[item], catalogue);
    out.truncate(k);
    out
}

/// The most popular items (of a category), hidden ones left out, pins applied.
pub fn popular(
    live: &LiveModel,
    k: usize,
    category: Option<&str>,
    rules: &CatalogRules,
    catalogue: &Catalogue,
) -> Vec<Scored> {
    let mut items = live
        .model
        .most_popular(k + rules.hidden.len().min(k * 4), category);
    items.retain(|s| !rules.hidden.contains(&s.item_id));
    let allowed = |item: &str| {
        !rules.hidden.contains(item)
            && category.is_none_or(|c| category_of(&live.model, item) == Some(c))
    };
    let ranked = apply_rules(items, k, rules, allowed);
    match category {
        Some(c) => {
            let news = live.new_designs(catalogue);
            with_new_designs(ranked, k, &news, c, |d| !rules.hidden.contains(&d.id))
        }
        None => ranked,
    }
}

fn category_of<'m>(model: &'m Model, item: &str) -> Option<&'m str> {
    model
        .items()
        .get(item)
        .and_then(|i| model.popular().category_of(i))
}

/// Boosts reorder the candidates, the best `k` are kept, then pins take their
/// places (an allowed pinned item moves there, or comes in from outside).
fn apply_rules(
    mut ranked: Vec<Scored>,
    k: usize,
    rules: &CatalogRules,
    allowed: impl Fn(&str) -> bool,
) -> Vec<Scored> {
    if !rules.boosts.is_empty() && !ranked.is_empty() {
        let (lo, hi) = ranked.iter().fold((f32::MAX, f32::MIN), |(lo, hi), s| {
            (lo.min(s.score), hi.max(s.score))
        });
        let spread = if hi > lo { hi - lo } else { 1.0 };
        for s in &mut ranked {
            if let Some(b) = rules.boosts.get(&s.item_id) {
                s.score += b * spread;
            }
        }
        // On a tie the boosted item goes first: 1.0 does lift the last to the top.
        let boosted = |s: &Scored| rules.boosts.contains_key(&s.item_id);
        ranked.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(boosted(b).cmp(&boosted(a)))
        });
    }
    ranked.truncate(k);
    for (item, position) in &rules.pins {
        if !allowed(item) {
            continue;
        }
        if let Some(i) = ranked.iter().position(|s| &s.item_id == item) {
            ranked.remove(i);
        }
        let at = (*position).min(ranked.len());
        // It takes the score of the place it takes, so scores stay in order.
        let score = ranked.get(at).or(ranked.last()).map_or(0.0, |s| s.score);
        ranked.insert(
            at,
            Scored {
                item_id: item.clone(),
                score,
            },
        );
        ranked.truncate(k);
    }
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use manirec_models::{Interaction, ModelKind, ModelSpec};
    use rand::{Rng, SeedableRng};

    /// Item `i{n}`: 4 kinds of design (category `c{n / 25}`), designers of 5.
    fn design(f: &mut Features, id: &str, n: usize) {
        f.insert(id, "category", &format!("c{}", n / 25));
        f.insert(id, "designer", &format!("d{}", n / 5));
    }

    /// A two-tower model of 200 shoppers who each buy one kind (`u % 4`), and a
    /// catalogue where two designs arrived after it was trained: `new-2` (of
    /// kind 2, designer d11) and `new-0` (kind 0, designer d1).
    fn shop_with_new_designs() -> (LiveModel, Catalogue) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut rows = Vec::new();
        for round in 0..30 {
            for u in 0..200usize {
                let n = if rng.random::<f32>() < 0.9 {
                    (u % 4) * 25 + rng.random_range(0..25)
                } else {
                    rng.random_range(0..100)
                };
                let t = 1_600_000_000 + (round * 200 + u as i64) * 600;
                rows.push(Interaction::rating(
                    format!("u{u}"),
                    format!("i{n}"),
                    1.0,
                    t,
                ));
            }
        }
        let mut trained = Features::new();
        for n in 0..100 {
            design(&mut trained, &format!("i{n}"), n);
        }
        let mut spec = ModelSpec::new(ModelKind::TwoTower);
        spec.two_tower.dim = 16;
        spec.two_tower.epochs = 8;
        spec.two_tower.batch_size = 128;
        spec.two_tower.learning_rate = 0.02;
        spec.two_tower.item_id_dropout = 0.5;
        let model = manirec_models::train(&rows, &spec, Some(&trained)).unwrap();
        let mut catalogue = Catalogue::default();
        for n in 0..100 {
            catalogue
                .item_category
                .insert(format!("i{n}"), format!("c{}", n / 25));
        }
        for (id, n) in [("new-2", 55), ("new-0", 5)] {
            design(&mut catalogue.features, id, n);
            let category = format!("c{}", n / 25);
            catalogue.live.push((id.into(), category.clone()));
            catalogue.item_category.insert(id.into(), category);
        }
        // A design of kind 2 whose features no model knows.
        catalogue.live.push(("new-plain".into(), "c2".into()));
        catalogue.fingerprint = 1;
        (LiveModel::new("m1".into(), model), catalogue)
    }

    #[test]
    fn a_two_tower_model_ranks_designs_added_after_it_from_their_features() {
        let (live, catalogue) = shop_with_new_designs();
        let rules = CatalogRules::default();
        let ids = |s: &[Scored]| s.iter().map(|s| s.item_id.clone()).collect::<Vec<_>>();
        let past = Past::default();
        let ask = |user: &'static str| Ask {
            user: Some(user),
            past: &past,
            k: 30,
            category: None,
            exclude: &[],
        };
        // Shoppers of kind 2 mostly get the new design of kind 2 among their
        // thirty (there are 25 known designs of each kind), with no category
        // asked, and seldom the one of kind 0; shoppers of kind 0 the other way
        // round. Known only by its features, a new design ranks among its kind,
        // not above what each shopper bought most.
        let shown = |kind: usize, design: &str| {
            (0..50)
                .map(|n| format!("u{}", n * 4 + kind))
                .filter(|u| {
                    let user = u.as_str();
                    let ask = Ask {
                        user: Some(user),
                        ..ask("u0")
                    };
                    ids(&recommend(&live, &ask, &rules, &catalogue)).contains(&design.into())
                })
                .count()
        };
        let counts = [
            shown(2, "new-2"),
            shown(2, "new-0"),
            shown(0, "new-0"),
            shown(0, "new-2"),
        ];
        assert!(counts[0] >= 25 && counts[0] >= 3 * counts[1], "{counts:?}");
        assert!(counts[2] >= 25 && counts[2] >= 3 * counts[3], "{counts:?}");
        // A fresh session that viewed a known design and the new one of its kind
        // gets neither back, as the model leaves a session's own items out.
        let viewed: Vec<Interaction> = ["i57", "new-2"]
            .iter()
            .enumerate()
            .map(|(t, i)| Interaction::rating("session:v", *i, 1.0, 1_700_000_000 + t as i64))
            .collect();
        let session = Past {
            history: viewed,
            bought: Vec::new(),
        };
        let answer = ids(&recommend(
            &live,
            &Ask {
                user: Some("session:v"),
                past: &session,
                ..ask("u0")
            },
            &rules,
            &catalogue,
        ));
        assert!(!answer.contains(&"new-2".into()) && !answer.contains(&"i57".into()));
        // In a category's answer, a new design the model cannot embed (no
        // feature it knows) is given a place; one it can competes by its score.
        let in_c2 = |user: &'static str| {
            let ask = Ask {
                category: Some("c2"),
                k: 8,
                ..ask(user)
            };
            ids(&recommend(&live, &ask, &rules, &catalogue))
        };
        assert!(
            in_c2("u0").contains(&"new-plain".into()),
            "{:?}",
            in_c2("u0")
        );
        assert!(!in_c2("u0").contains(&"new-0".into()));

        // Hidden stays hidden.
        let mut hiding = CatalogRules::default();
        hiding.hidden.insert("new-2".into());
        let hidden = ids(&recommend(&live, &ask("u2"), &hiding, &catalogue));
        assert!(!hidden.contains(&"new-2".into()), "{hidden:?}");

        // The new design's likes come from its features: designs of its kind,
        // its designer's first (its category's best sellers would not know him).
        let likes = similar(&live, "new-2", 10, &rules, &catalogue);
        let n = |s: &Scored| s.item_id[1..].parse::<usize>().ok();
        let of_kind_2 = likes
            .iter()
            .filter(|s| n(s).map(|n| n / 25) == Some(2))
            .count();
        assert!(of_kind_2 >= 8, "{likes:?}");
        let by_designer = likes[..5]
            .iter()
            .filter(|s| n(s).map(|n| n / 5) == Some(11))
            .count();
        assert!(by_designer >= 3, "{likes:?}");
        // Beside a known design of kind 2, its new sibling of the same category
        // takes its place by likeness, not after every known design.
        let beside = ids(&similar(&live, "i57", 20, &rules, &catalogue));
        assert!(beside.contains(&"new-2".into()), "{beside:?}");
        assert!(!beside.contains(&"new-0".into()), "{beside:?}");
    }

    /// Registers a version of `kind` on `dataset` whose session report is
    /// `ndcg` (beating popularity or not), and whose first-visit report is its
    /// tenth, except for two-tower models, whose first-visit report is `ndcg`
    /// and whose session report is its tenth.
    fn register(store: &Store, kind: &str, dataset: &str, ndcg: f64, beats: bool) -> String {
        let v = store.reserve_model_version(kind, dataset, "{}").unwrap();
        let (session, first) = match kind {
            "two-tower" => (ndcg / 10.0, ndcg),
            _ => (ndcg, ndcg / 10.0),
        };
        let metrics = serde_json::json!({
            "metrics": {"ndcg@10": 0.2},
            "session": {"metrics": {"ndcg@10": session}, "beats_baseline": beats},
            "first_visit": {"metrics": {"ndcg@10": first}, "beats_baseline": beats},
        });
        store
            .register_model_candidate(&v, "{}", &metrics.to_string(), "k", "s")
            .unwrap();
        v
    }

    #[test]
    fn the_best_measured_model_answers_sessions_and_first_visits() {
        let store = Store::open_in_memory().unwrap();
        let session = |s: &Store| version_for(s, Protocol::Session).unwrap();
        assert_eq!(session(&store), None, "no active model");
        let active = register(&store, "als", "v1.0", 0.30, true);
        store.promote_model_version(&active).unwrap();
        assert_eq!(session(&store), None, "only the active one");
        let worse = register(&store, "ease", "v1.0", 0.25, true);
        let undecided = register(&store, "sr", "v1.0", 0.50, false);
        let other_data = register(&store, "vsknn", "v1.1", 0.60, true);
        assert_eq!(session(&store), None);
        let best = register(&store, "item-knn", "v1.0", 0.40, true);
        let got = session(&store).unwrap();
        assert_eq!(got.version, best);
        assert!(![worse, undecided, other_data].contains(&got.version));
        let first = version_for(&store, Protocol::FirstVisit).unwrap().unwrap();
        assert_eq!(first.version, best, "the same rule, on its own report");
        let accounts = register(&store, "two-tower", "v1.0", 0.45, true);
        assert_eq!(session(&store).unwrap().version, best);
        let first = version_for(&store, Protocol::FirstVisit).unwrap().unwrap();
        assert_eq!(first.version, accounts);
        assert!(measured_to_win(&first, Protocol::FirstVisit));
    }

    fn scored(ids: &[&str]) -> Vec<Scored> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Scored {
                item_id: id.to_string(),
                score: 10.0 - i as f32,
            })
            .collect()
    }

    fn ids(s: &[Scored]) -> Vec<&str> {
        s.iter().map(|s| s.item_id.as_str()).collect()
    }

    #[test]
    fn pins_take_their_place_and_boosts_lift() {
        let rules = CatalogRules {
            pins: vec![("p".into(), 0), ("c".into(), 2)],
            boosts: HashMap::from([("e".into(), 1.0)]),
            ..CatalogRules::default()
        };
        let out = apply_rules(scored(&["a", "b", "c", "d", "e"]), 4, &rules, |_| true);
        assert_eq!(ids(&out), ["p", "e", "c", "a"]);
        assert!(out.windows(2).all(|w| w[0].score >= w[1].score));
        // A pin that is not allowed here (bought, hidden, other category) stays out.
        let out = apply_rules(scored(&["a", "b", "c"]), 3, &rules, |i| i != "p");
        assert_eq!(ids(&out), ["a", "b", "c"]);
        // Fewer candidates than the pin's position: it goes last.
        let out = apply_rules(
            scored(&["a"]),
            3,
            &CatalogRules {
                pins: vec![("z".into(), 5)],
                ..CatalogRules::default()
            },
            |_| true,
        );
        assert_eq!(ids(&out), ["a", "z"]);
    }

    #[test]
    fn a_customers_first_visit_goes_to_the_model_that_knows_their_account() {
        use manirec_models::{Features, Interaction, ModelKind, ModelSpec};
        // Customers c0..c39 bought; c40 has an account and nothing else.
        let rows: Vec<Interaction> = (0..400)
            .map(|n| {
                let user = format!("c{}", n % 40);
                Interaction::rating(user, format!("i{}", n % 13), 1.0, n as i64)
            })
            .collect();
        let mut features = Features::new();
        for u in 0..=40 {
            features.insert_user(&format!("c{u}"), "country", "de");
        }
        let train = |kind, f: Option<&Features>| {
            let mut spec = ModelSpec::new(kind);
            spec.als.factors = 4;
            spec.two_tower.dim = 8;
            spec.two_tower.epochs = 1;
            let model = manirec_models::train(&rows, &spec, f).unwrap();
            Arc::new(LiveModel::new(kind.as_str().into(), model))
        };
        let active = train(ModelKind::Als, None);
        let first = train(ModelKind::TwoTower, Some(&features));
        let serving = Serving {
            active: Some(active.clone()),
            first_visit: Some(first.clone()),
            ..Serving::default()
        };
        let route = |unit: &str| {
            let chosen = serving.choose(Some(unit)).unwrap().0;
            serving
                .for_first_visit(unit, &chosen)
                .map(|m| m.version.clone())
        };
        assert_eq!(route("c40").as_deref(), Some("two-tower"));
        assert_eq!(route("c3"), None, "the active model was trained on c3");
        assert_eq!(route("c41"), None, "no account");
        assert_eq!(route("session:s1"), None, "a visitor, not a customer");
        // Popularity, or a model of histories, knows no one: the account answers.
        let popular = train(ModelKind::Popular, None);
        assert!(serving.for_first_visit("c3", &popular).is_some());
        let without = Serving {
            active: Some(active),
            ..Serving::default()
        };
        assert!(without.for_first_visit("c40", &first).is_none());

        // The account answers only when the model's first-visit report won.
        let answer = |live: &LiveModel| {
            let ask = Ask {
                user: Some("c40"),
                past: &Default::default(),
                k: 5,
                category: None,
                exclude: &[],
            };
            let rules = CatalogRules::default();
            let items = recommend(live, &ask, &rules, &Catalogue::default());
            items.into_iter().map(|s| s.item_id).collect::<Vec<_>>()
        };
        let popular_answer: Vec<String> = first
            .model
            .most_popular(5, None)
            .into_iter()
            .map(|s| s.item_id)
            .collect();
        assert_eq!(answer(&first), popular_answer, "not measured to win");
        let trusted = LiveModel::new("m".into(), first.model.clone()).answering_first_visits(true);
        assert_ne!(answer(&trusted), popular_answer);
    }
}
