//! A/B tests between two model versions: who lands in which arm, what each arm
//! collected, whether the difference is real, and what the retrain loop should
//! do about it.
//!
//! Assignment hashes the experiment and the shopper (their training id: a
//! customer's keyed hash, or `session:<id>`), so a shopper stays in one arm for
//! the whole test, on every replica, without any state. The primary metric is
//! the click-through rate (clicks / impressions) when the storefront reports
//! impressions, else conversion (attributed purchases / requests); its lift
//! comes with a 95 % interval (log of the ratio, delta method) and the p-value
//! of a pooled two-proportion z-test.

use manirec_store::{Actor, ArmCounts, Experiment, Outcome, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::rfc3339_ms;
use crate::Result;

/// The arm a shopper is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The version serving before the test.
    Control,
    /// The version under test.
    Treatment,
}

impl Variant {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Control => "control",
            Variant::Treatment => "treatment",
        }
    }
}

/// The arm of `unit` (a shopper's training id) in `experiment`: the first 8
/// bytes of SHA-256(`<id>:<unit>`) in 10,000 buckets, the first `traffic` %
/// of them to the treatment.
pub fn assign(experiment: &Experiment, unit: &str) -> Variant {
    let digest = Sha256::digest(format!("{}:{unit}", experiment.id).as_bytes());
    let head = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    if head % 10_000 < u64::from(experiment.traffic) * 100 {
        Variant::Treatment
    } else {
        Variant::Control
    }
}

/// When a test has enough evidence, and how purchases are attributed
/// (`[experiments]` in manirec.toml).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// A purchase of a recommended item within this many hours after the
    /// recommendation is attributed to it.
    pub attribution_hours: f64,
    /// Exposures (impressions, or requests when there are none) each arm needs
    /// before the loop decides.
    pub min_exposures: u64,
    /// Significance level of the decision.
    pub alpha: f64,
    /// After this many days with enough exposures and no significant
    /// difference, the loop keeps the treatment unless it looks worse.
    pub max_days: f64,
    /// Largest share of an arm's impressions or clicks one shopper may carry
    /// before the loop refuses to act on the numbers (a bot, or a forger).
    pub max_shopper_share: f64,
}

impl ExperimentConfig {
    fn window_ms(&self) -> i64 {
        (self.attribution_hours * 3_600_000.0) as i64
    }

    fn max_ms(&self) -> i64 {
        (self.max_days * 86_400_000.0) as i64
    }
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            attribution_hours: 24.0,
            min_exposures: 1000,
            alpha: 0.05,
            max_days: 14.0,
            max_shopper_share: 0.2,
        }
    }
}

/// One arm's numbers: what the store counted, and the two rates.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Arm {
    /// Requests, impressions, clicks, purchases.
    #[serde(flatten)]
    pub counts: ArmCounts,
    /// clicks / impressions.
    pub ctr: Option<f64>,
    /// purchases / requests.
    pub conversion: Option<f64>,
}

impl From<ArmCounts> for Arm {
    fn from(c: ArmCounts) -> Self {
        let ratio = |x: u64, n: u64| (n > 0).then(|| x as f64 / n as f64);
        Arm {
            counts: c,
            ctr: ratio(c.clicks, c.impressions),
            conversion: ratio(c.purchases, c.requests),
        }
    }
}

/// Both arms.
#[derive(Debug, Clone, Serialize)]
pub struct Arms {
    /// The version serving before.
    pub control: Arm,
    /// The version under test.
    pub treatment: Arm,
}

/// A comparison of one proportion between the arms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    /// treatment / control − 1.
    pub lift: Option<f64>,
    /// 95 % interval of the lift.
    pub lift_ci: Option<[f64; 2]>,
    /// Two-sided p-value of the pooled two-proportion z-test.
    pub p_value: Option<f64>,
}

/// `experiment status`.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentStatus {
    /// Its number.
    pub experiment_id: i64,
    /// Control's model version.
    pub control: String,
    /// Treatment's model version.
    pub treatment: String,
    /// % of shoppers in the treatment.
    pub traffic: u8,
    /// Whether it still splits traffic.
    pub status: manirec_store::ExperimentStatus,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub stopped_at: Option<String>,
    /// Per arm.
    pub arms: Arms,
    /// The metric `lift` and `p_value` are about: `ctr` or `conversion`.
    pub metric: &'static str,
    /// Lift of the primary metric.
    pub lift: Option<f64>,
    /// Its 95 % interval.
    pub lift_ci: Option<[f64; 2]>,
    /// Its p-value.
    pub p_value: Option<f64>,
    /// Click-through rate compared.
    pub ctr: Comparison,
    /// Conversion compared.
    pub conversion: Comparison,
    /// Whether both arms have the exposures the loop needs.
    pub enough_evidence: bool,
    /// What the loop would do now: `continue`, `promote` or `roll_back`.
    pub decision: Decision,
    /// Why, in words.
    pub reason: String,
}

/// What to do with a running test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Not enough evidence yet.
    Continue,
    /// The treatment wins (or is not worse after the maximum duration).
    Promote,
    /// The treatment is worse.
    RollBack,
}

/// Two proportions `x1/n1` (control) and `x2/n2` (treatment) compared.
pub fn compare(x1: u64, n1: u64, x2: u64, n2: u64) -> Comparison {
    if n1 == 0 || n2 == 0 {
        return Comparison {
            lift: None,
            lift_ci: None,
            p_value: None,
        };
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1 + n2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    let p_value = if se > 0.0 {
        Some(libm::erfc(
            ((p2 - p1) / se).abs() / std::f64::consts::SQRT_2,
        ))
    } else {
        Some(1.0)
    };
    let lift = (x1 > 0).then(|| p2 / p1 - 1.0);
    let lift_ci = (x1 > 0 && x2 > 0).then(|| {
        let se_log = ((1.0 - p1) / x1 as f64 + (1.0 - p2) / x2 as f64).sqrt();
        let log_ratio = (p2 / p1).ln();
        [
            (log_ratio - 1.96 * se_log).exp() - 1.0,
            (log_ratio + 1.96 * se_log).exp() - 1.0,
        ]
    });
    Comparison {
        lift,
        lift_ci,
        p_value,
    }
}

/// Starts a test: `traffic` % of shoppers get `treatment`, the rest `control`.
pub fn start(
    store: &Store,
    control: &str,
    treatment: &str,
    traffic: u8,
    started_by: Actor,
) -> Result<Experiment> {
    Ok(store.start_experiment(control, treatment, traffic, started_by)?)
}

/// The experiment `id`, or the running one, or the latest.
pub fn find(store: &Store, id: Option<i64>) -> Result<Experiment> {
    let found = match id {
        Some(id) => store.experiment(id)?,
        None => match store.running_experiment()? {
            Some(e) => Some(e),
            None => store.experiments()?.into_iter().next(),
        },
    };
    found.ok_or_else(|| {
        crate::Error::Data(match id {
            Some(id) => format!("no experiment {id} (see `manirec experiment status`)"),
            None => "no experiment yet: start one with `manirec experiment start --control V --treatment W`".into(),
        })
    })
}

/// Per-arm results, the comparison and the decision the loop would take.
pub fn status(
    store: &Store,
    id: Option<i64>,
    config: &ExperimentConfig,
) -> Result<ExperimentStatus> {
    let e = find(store, id)?;
    let counts = store.arm_counts(e.id, config.window_ms())?;
    let control = Arm::from(counts.get("control").copied().unwrap_or_default());
    let treatment = Arm::from(counts.get("treatment").copied().unwrap_or_default());
    let ctr = compare(
        control.counts.clicks,
        control.counts.impressions,
        treatment.counts.clicks,
        treatment.counts.impressions,
    );
    let conversion = compare(
        control.counts.purchases,
        control.counts.requests,
        treatment.counts.purchases,
        treatment.counts.requests,
    );
    let by_ctr = control.counts.impressions > 0 && treatment.counts.impressions > 0;
    let (metric, primary, exposures) = if by_ctr {
        (
            "ctr",
            ctr,
            control.counts.impressions.min(treatment.counts.impressions),
        )
    } else {
        (
            "conversion",
            conversion,
            control.counts.requests.min(treatment.counts.requests),
        )
    };
    let enough_evidence = exposures >= config.min_exposures;
    let age = crate::time::now_ms() - e.started_at;
    let (decision, reason) = match insane(&control, &treatment, config) {
        // Numbers that cannot be honest are never acted on.
        Some(why) => (
            Decision::Continue,
            format!("not acting: the numbers fail a sanity check ({why})"),
        ),
        None => decide(&primary, enough_evidence, age, config, metric),
    };
    Ok(ExperimentStatus {
        experiment_id: e.id,
        control: e.control,
        treatment: e.treatment,
        traffic: e.traffic,
        status: e.status,
        outcome: e.outcome,
        started_at: rfc3339_ms(e.started_at),
        stopped_at: e.stopped_at.map(rfc3339_ms),
        arms: Arms { control, treatment },
        metric,
        lift: primary.lift,
        lift_ci: primary.lift_ci,
        p_value: primary.p_value,
        ctr,
        conversion,
        enough_evidence,
        decision,
        reason,
    })
}

/// Fewest clicks or impressions in an arm before one shopper's share is judged.
const SHARE_FLOOR: u64 = 20;

/// What makes an arm's numbers impossible or untrustworthy, if anything: more
/// clicks than impressions, or one shopper carrying an outsized share.
fn insane(control: &Arm, treatment: &Arm, config: &ExperimentConfig) -> Option<String> {
    for (name, arm) in [("control", control), ("treatment", treatment)] {
        let c = &arm.counts;
        if c.clicks > c.impressions {
            return Some(format!(
                "{name} has {} clicks for {} impressions",
                c.clicks, c.impressions
            ));
        }
        for (what, top, total) in [
            ("impressions", c.top_shopper_impressions, c.impressions),
            ("clicks", c.top_shopper_clicks, c.clicks),
        ] {
            if total >= SHARE_FLOOR && top as f64 > config.max_shopper_share * total as f64 {
                return Some(format!(
                    "one shopper carries {top} of {name}'s {total} {what}, over the {:.0} % allowed",
                    config.max_shopper_share * 100.0
                ));
            }
        }
    }
    None
}

fn decide(
    primary: &Comparison,
    enough: bool,
    age_ms: i64,
    config: &ExperimentConfig,
    metric: &str,
) -> (Decision, String) {
    if !enough {
        return (
            Decision::Continue,
            format!(
                "collecting: each arm needs {} exposures before a decision",
                config.min_exposures
            ),
        );
    }
    let lift = primary.lift.unwrap_or(0.0);
    let p = primary.p_value.unwrap_or(1.0);
    if p < config.alpha {
        return if lift > 0.0 {
            (
                Decision::Promote,
                format!(
                    "treatment's {metric} is {:+.1} % (p = {p:.3})",
                    lift * 100.0
                ),
            )
        } else {
            (
                Decision::RollBack,
                format!(
                    "treatment's {metric} is {:+.1} % (p = {p:.3})",
                    lift * 100.0
                ),
            )
        };
    }
    if age_ms >= config.max_ms() {
        return if lift >= 0.0 {
            (
                Decision::Promote,
                format!(
                    "no significant difference after {:.0} days and the treatment is not worse ({:+.1} %): keep the newer model",
                    config.max_days,
                    lift * 100.0
                ),
            )
        } else {
            (
                Decision::RollBack,
                format!(
                    "no significant difference after {:.0} days and the treatment looks worse ({:+.1} %)",
                    config.max_days,
                    lift * 100.0
                ),
            )
        };
    }
    (
        Decision::Continue,
        format!("no significant difference yet (p = {p:.3})"),
    )
}

/// Ends the experiment `id` (or the running one): with `promote`, the
/// treatment becomes the active model (and the retrain trigger's clock restarts).
pub fn stop(store: &Store, id: Option<i64>, outcome: Outcome) -> Result<Experiment> {
    let id = resolve(store, id)?;
    let e = store.stop_experiment(id, outcome)?;
    if outcome == Outcome::Promoted {
        crate::trigger::mark_trained(store)?;
    }
    Ok(e)
}

/// [`stop`] for a person (CLI, admin API): promoting a treatment that the
/// evidence says is worse (the test's decision is to roll back) is refused
/// unless `force`, with the numbers that say so.
pub fn stop_checked(
    store: &Store,
    id: Option<i64>,
    outcome: Outcome,
    force: bool,
    config: &ExperimentConfig,
) -> Result<Experiment> {
    let id = resolve(store, id)?;
    if outcome == Outcome::Promoted && !force {
        let status = status(store, Some(id), config)?;
        if status.decision == Decision::RollBack {
            return Err(crate::Error::Data(format!(
                "experiment {id}: the evidence is against promoting {} ({}); \
                 roll it back, or promote anyway with --force (\"force\": true)",
                status.treatment, status.reason
            )));
        }
    }
    stop(store, Some(id), outcome)
}

fn resolve(store: &Store, id: Option<i64>) -> Result<i64> {
    Ok(match id {
        Some(id) => id,
        None => {
            store
                .running_experiment()?
                .ok_or_else(|| crate::Error::Data("no experiment is running".into()))?
                .id
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(id: i64, traffic: u8) -> Experiment {
        Experiment {
            id,
            control: "m1".into(),
            treatment: "m2".into(),
            traffic,
            status: manirec_store::ExperimentStatus::Running,
            started_at: 0,
            stopped_at: None,
            outcome: None,
            started_by: Actor::Cli,
        }
    }

    #[test]
    fn assignment_is_sticky_and_splits_traffic_as_asked() {
        let e = experiment(7, 30);
        let units: Vec<String> = (0..20_000).map(|i| format!("u_{i}")).collect();
        let treated = units
            .iter()
            .filter(|u| assign(&e, u) == Variant::Treatment)
            .count();
        let share = treated as f64 / units.len() as f64;
        assert!((share - 0.30).abs() < 0.015, "share {share}");
        for u in &units[..100] {
            assert_eq!(assign(&e, u), assign(&e, u));
        }
        // Another experiment reshuffles who is treated.
        let other = experiment(8, 30);
        let same = units[..1000]
            .iter()
            .filter(|u| assign(&e, u) == assign(&other, u))
            .count();
        assert!(same < 700, "{same} of 1000 kept their arm");
    }

    #[test]
    fn a_real_difference_is_significant_and_noise_is_not() {
        // 5 % vs 6.5 % on 10,000 impressions each: z ≈ 4.5.
        let real = compare(500, 10_000, 650, 10_000);
        assert!(real.p_value.unwrap() < 0.001);
        assert!((real.lift.unwrap() - 0.30).abs() < 1e-9);
        let [lo, hi] = real.lift_ci.unwrap();
        assert!(lo > 0.1 && hi < 0.5 && lo < 0.3 && hi > 0.3);
        let noise = compare(50, 1000, 52, 1000);
        assert!(noise.p_value.unwrap() > 0.5);
        let [lo, hi] = noise.lift_ci.unwrap();
        assert!(lo < 0.0 && hi > 0.0);
        assert_eq!(compare(0, 0, 1, 10).p_value, None);
        assert_eq!(compare(0, 10, 0, 10).p_value, Some(1.0));
    }

    #[test]
    fn promoting_against_the_evidence_needs_force_and_restarts_the_trigger_clock() {
        use manirec_store::{BehaviorEvent, RecommendationLog};
        let mut store = Store::open_in_memory().unwrap();
        let mut versions = Vec::new();
        for _ in 0..2 {
            let v = store.reserve_model_version("ease", "v1.0", "{}").unwrap();
            store
                .register_model_candidate(&v, "{}", "{}", "k", "00")
                .unwrap();
            versions.push(v);
        }
        store.promote_model_version(&versions[0]).unwrap();
        let e = start(&store, &versions[0], &versions[1], 50, Actor::Cli).unwrap();
        let t0 = e.started_at + 1;
        let (mut logs, mut events) = (Vec::new(), Vec::new());
        for n in 0..400 {
            let variant = if n % 2 == 0 { "control" } else { "treatment" };
            let request = format!("r{n}");
            logs.push(RecommendationLog {
                request_id: request.clone(),
                created_at: t0,
                user_id: Some(format!("session:s{n}")),
                endpoint: "recommendations",
                model_version: None,
                experiment_id: Some(e.id),
                variant,
                items: vec!["x".into()],
            });
            let mut ev = |id: String, kind: &str| {
                events.push(BehaviorEvent {
                    event_id: id,
                    event_type: kind.into(),
                    product_id: "x".into(),
                    user_id: None,
                    session_id: Some(format!("s{n}")),
                    device_id: None,
                    timestamp_ms: t0 + 10,
                    request_id: Some(request.clone()),
                    properties: None,
                })
            };
            ev(format!("i{n}"), "rec_impression");
            // The control's shoppers click half the time, the treatment's one in 20.
            if (variant == "control" && n % 4 == 0) || (variant == "treatment" && n % 40 == 1) {
                ev(format!("c{n}"), "rec_click");
            }
        }
        store.insert_recommendation_log(&logs).unwrap();
        store.insert_events(&events).unwrap();
        let config = ExperimentConfig {
            min_exposures: 100,
            ..ExperimentConfig::default()
        };
        assert_eq!(
            status(&store, Some(e.id), &config).unwrap().decision,
            Decision::RollBack
        );
        let err = stop_checked(&store, None, Outcome::Promoted, false, &config).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(
            store.active_model_version().unwrap().unwrap().version,
            versions[0]
        );
        assert_eq!(
            store.state_get(crate::trigger::LAST_TRAINING_AT).unwrap(),
            None
        );
        // Rolling back needs no force; promoting with it does what was asked.
        stop_checked(&store, None, Outcome::Promoted, true, &config).unwrap();
        assert_eq!(
            store.active_model_version().unwrap().unwrap().version,
            versions[1]
        );
        assert!(store
            .state_get(crate::trigger::LAST_TRAINING_AT)
            .unwrap()
            .is_some());
    }

    #[test]
    fn insane_numbers_are_never_acted_on() {
        let config = ExperimentConfig::default();
        let arm = |impressions, clicks, top_i, top_c| {
            Arm::from(ArmCounts {
                requests: 5000,
                impressions,
                clicks,
                top_shopper_impressions: top_i,
                top_shopper_clicks: top_c,
                purchases: 0,
            })
        };
        let fine = arm(2000, 100, 10, 2);
        assert_eq!(insane(&fine, &fine, &config), None);
        let why = insane(&fine, &arm(50, 80, 5, 1), &config).unwrap();
        assert!(why.contains("80 clicks for 50 impressions"), "{why}");
        let why = insane(&arm(2000, 100, 10, 60), &fine, &config).unwrap();
        assert!(
            why.contains("one shopper carries 60 of control's 100 clicks"),
            "{why}"
        );
        // Few clicks are naturally concentrated: not judged below the floor.
        assert_eq!(insane(&arm(2000, 5, 10, 5), &fine, &config), None);
    }

    #[test]
    fn the_loop_waits_for_evidence_then_follows_the_test() {
        let config = ExperimentConfig::default();
        let worse = compare(650, 10_000, 500, 10_000);
        let better = compare(500, 10_000, 650, 10_000);
        let even = compare(500, 10_000, 505, 10_000);
        assert_eq!(
            decide(&better, false, 0, &config, "ctr").0,
            Decision::Continue
        );
        assert_eq!(
            decide(&better, true, 0, &config, "ctr").0,
            Decision::Promote
        );
        assert_eq!(
            decide(&worse, true, 0, &config, "ctr").0,
            Decision::RollBack
        );
        assert_eq!(decide(&even, true, 0, &config, "ctr").0, Decision::Continue);
        let late = config.max_ms();
        assert_eq!(
            decide(&even, true, late, &config, "ctr").0,
            Decision::Promote
        );
    }
}
