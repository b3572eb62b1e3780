//! Command-line flags. `--help` is the first manual most users read: every
//! command says what it does, what it reads and writes, and shows an example.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use manirec_store::Source;

/// manirec: turns a shop's orders, catalogue and storefront behaviour into
/// training data, models and recommendations.
///
/// Everything lives in one data directory (SQLite database + object folder),
/// configured by <data-dir>/manirec.toml, overridden by MANIREC_* environment
/// variables, overridden by flags.
#[derive(Debug, Parser)]
#[command(name = "manirec", version, about, long_about, after_help = EXAMPLES)]
pub struct Cli {
    /// Where the database, objects and keys live.
    #[arg(
        long,
        global = true,
        env = "MANIREC_DATA_DIR",
        default_value = "./manirec-data"
    )]
    pub data_dir: PathBuf,

    /// Print one JSON object on stdout (progress and logs go to stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// More logging on stderr (-v info, -vv debug); MANIREC_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Examples:
  manirec demo --no-serve                 build a demo shop and run every stage
  manirec import --store shop.db          mirror the shop's SQLite file (or a D1 dump)
  manirec import --interactions ratings.csv --source public
  manirec extract --seed 7                orders and images -> training interactions
  manirec --json extract | jq .inserted
  manirec dataset build                   a new dataset version (train/test Parquet + manifest)
  manirec train --model ease              train on the latest dataset version, register a candidate
  manirec evaluate --protocol session     offline metrics beside popularity
  manirec models list                     the registry; `models promote m3` makes m3 active
  manirec report                          today's data-quality report";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a realistic demo shop and run every stage on it, end to end.
    ///
    /// Writes the shop as a SQLite file (<data-dir>/demo/shop.db), imports it,
    /// extracts training interactions, loads four weeks of storefront events,
    /// syncs them into interactions, prints what each stage did and how long it
    /// took, then serves (unless --no-serve) and prints curl lines to try.
    Demo(DemoArgs),
    /// Read the shop's database, or an interaction file, into the store.
    ///
    /// --store takes the shop's SQLite file or a D1 SQL dump (`wrangler d1
    /// export` output). Bad rows are counted and named, never fatal; importing
    /// an updated shop updates rows instead of duplicating them.
    ///
    /// --interactions takes `user_id,item_id,rating,timestamp[,interaction_type]`
    /// (header optional; tab-separated files such as MovieLens u.data work too).
    Import(ImportArgs),
    /// Turn the shop mirror into training interactions.
    ///
    /// Purchases (5.0) from paid orders; simulated pre-purchase views (3.0) and
    /// same-category views (2.0), flagged synthetic; design-image views (1.0).
    /// Emails are replaced by a keyed hash. Idempotent and deterministic: the
    /// same shop and seed give the same rows, a second run inserts nothing.
    /// Writes training-data/existing-data-<ms>.csv to the object store.
    Extract(ExtractArgs),
    /// Run the HTTP service: webhooks, storefront events, the SDK, metrics.
    ///
    /// Routes: POST /webhooks/shoplazza (needs MANIREC_SHOPLAZZA_SECRET),
    /// POST /v1/events, GET /sdk.js, GET /healthz, GET /metrics. Every
    /// [sync] interval_minutes (default 60) it polls the shop's orders API when
    /// MANIREC_SHOPLAZZA_API is set, syncs events into interactions and checks
    /// the retrain trigger. Stops gracefully on Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Turn stored storefront events into training interactions, then check the
    /// retrain trigger.
    ///
    /// Exactly once per event: the watermark is the ingestion sequence number,
    /// advanced in the same transaction as the rows. Anonymous sessions and
    /// devices that later logged in are re-attributed to the customer.
    Sync,
    /// The retrain trigger (--check), or the whole weekly loop (--run).
    ///
    /// --check: due when at least 10,000 new interactions since the last
    /// training, or 7 days, or the live model's quality dropped over 10 %
    /// ([trigger] in manirec.toml). When due, exports the increment
    /// (training-data/incremental-<ms>.csv and .meta.json) and notifies
    /// MANIREC_NOTIFY_URL, once per training cycle.
    ///
    /// --run: sync, then settle a running A/B test when it has the evidence
    /// (promote the winner or roll back); otherwise, when the trigger is due (or
    /// --force): export the increment, build the dataset, train a candidate
    /// ([retrain] model, warm_start), compare it offline with the active model on
    /// the same test set, and start an A/B test when it is not worse ([retrain]
    /// traffic, tolerance). A failing step leaves the active model serving.
    /// `serve` runs this every [schedule] retrain_minutes. Steps: `manirec runs`.
    Retrain(RetrainArgs),
    /// A/B tests between two model versions.
    ///
    /// Shoppers are assigned by a hash of their id and the experiment: the same
    /// shopper always sees the same arm. Status reports per arm: requests,
    /// impressions, clicks, CTR, purchases attributed within [experiments]
    /// attribution_hours, conversion; the lift with a 95 % interval and the
    /// p-value of a two-proportion test.
    ///
    /// Example: manirec experiment start --control m1 --treatment m2 --traffic 50
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// The shop's rules over every recommendation: hide, pin or boost items.
    ///
    /// Hidden items (and end products the shop marks unpublished) are never
    /// shown; a pinned item takes its position whenever it is allowed (not
    /// bought, not excluded, in the asked category); a boost lifts an item among
    /// the model's candidates (1.0 = from last to first). `serve` applies a change
    /// within 30 seconds.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// The journal of jobs: what each retrain, report and retention run did, step
    /// by step, and why one failed.
    Runs(RunsArgs),
    /// Fetch orders updated since the last poll from the shop's orders API
    /// (MANIREC_SHOPLAZZA_API, MANIREC_SHOPLAZZA_TOKEN): the backstop for
    /// missed webhooks.
    Poll,
    /// Top-K recommendations, as `GET /v1/recommendations` answers them: from
    /// the running experiment's arm of the shopper, else the version that
    /// measured best for anonymous sessions or a customer's first visit where
    /// one did, else the active model; purchased items left out, popularity for
    /// strangers. The answer names the model version (and arm) that gave it.
    ///
    /// Example: manirec recommend --user ana@example.com --k 5
    Recommend(RecommendArgs),
    /// Build and list dataset versions (train/test Parquet files + manifest).
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Train a model on a dataset version and register it as a candidate.
    ///
    /// Reads datasets/<version>/{train,test}.parquet (checked against the
    /// manifest), trains, evaluates on the warm protocol beside popularity, and
    /// writes models/<version>/model.safetensors and meta.json.
    /// Example: manirec train --model als --factors 64 --iterations 15
    Train(Box<TrainArgs>),
    /// Offline metrics of a model version on its dataset's test part, beside
    /// popularity, with 95 % bootstrap intervals.
    ///
    /// Protocols: warm (known users, next items) and session (new users scored
    /// from the first half of their session). Says loudly when the model does
    /// not beat popularity. --dump FILE writes the ranked lists, one JSON per line.
    Evaluate(EvaluateArgs),
    /// The model registry: list versions, promote one to active.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Write the training interactions to the object store, with a .meta.json sidecar.
    ///
    /// All interactions, or with --incremental those written since the last
    /// export, sorted by time, refunded orders' rows left out:
    /// training-data/interactions-<ms>.<ext> or training-data/incremental-<ms>.<ext>,
    /// and <key>.meta.json (type, since, count, sha256).
    ///
    /// Example: manirec export --incremental --format parquet
    Export(ExportArgs),
    /// Daily data-quality report: rows, users, items by source, new since the
    /// previous report, share of synthetic rows, events refused.
    ///
    /// Users and items are counted once across sources. Written to
    /// reports/data-quality-<date>.json in the object store, and printed.
    Report,
    /// Retention: delete training interactions and behaviour events older than
    /// --older-than days (default 365).
    ///
    /// Files already in the object store are not rewritten; the next dataset
    /// version no longer holds the deleted rows.
    Cleanup(CleanupArgs),
    /// Delete one customer's data everywhere in the store (GDPR erasure).
    ///
    /// Takes an email or an id (shop customer id, session or device id, training
    /// user id); widens it through the shop mirror (accounts, orders) and the
    /// customer's events (their sessions and devices), then deletes mirror rows,
    /// events and training interactions in one transaction, and says how many rows
    /// of each table. Example: manirec forget --user ana@example.com
    Forget(ForgetArgs),
    /// Move the shop between databases (from the embedded SQLite file to
    /// PostgreSQL, say).
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every table of the configured store into another database.
    ///
    /// Reads one consistent snapshot of the store MANIREC_DATABASE_URL names
    /// (serve may keep running), creates the schema in the target when it is
    /// new, upserts every row by its key (run it again to bring what arrived
    /// since: nothing doubles), keeps every id, and ends by comparing each
    /// table's row count on both sides; a target that holds another shop's rows
    /// fails there. Datasets and models stay in the object store: point the new
    /// deployment's MANIREC_OBJECT_STORE at the same place.
    ///
    /// Example: manirec store copy --to postgres://manirec:secret@db.internal/manirec
    Copy {
        /// The target database: postgres://USER:PASSWORD@HOST:PORT/DB or sqlite://PATH.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["user", "session"])))]
pub struct RecommendArgs {
    /// The shop's user id or email.
    #[arg(long)]
    pub user: Option<String>,
    /// A storefront session id (its customer, once linked).
    #[arg(long)]
    pub session: Option<String>,
    /// How many items.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Only this category.
    #[arg(long)]
    pub category: Option<String>,
    /// Items to leave out (repeat, or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", env = "MANIREC_ADDR")]
    pub addr: String,
}

#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// Check the trigger (and fire it when due).
    #[arg(long, required_unless_present = "run", conflicts_with = "run")]
    pub check: bool,
    /// Run the whole weekly loop.
    #[arg(long)]
    pub run: bool,
    /// With --run: train a candidate even when the trigger is not due.
    #[arg(long, requires = "run")]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Start an A/B test: --traffic % of shoppers get the treatment.
    Start {
        /// The version serving now (usually the active one).
        #[arg(long)]
        control: String,
        /// The version to test.
        #[arg(long)]
        treatment: String,
        /// Percent of shoppers sent to the treatment (1-99).
        #[arg(long, default_value_t = 50)]
        traffic: u8,
    },
    /// Per-arm results of an experiment (default: the running one, else the latest).
    Status {
        /// Experiment id.
        id: Option<i64>,
    },
    /// End an experiment (default: the running one).
    Stop {
        /// Experiment id.
        id: Option<i64>,
        /// Make the treatment the active model.
        #[arg(long)]
        promote: bool,
        /// Retire the treatment; the control keeps serving.
        #[arg(long, conflicts_with = "promote")]
        roll_back: bool,
        /// Promote even when the test's evidence says the treatment is worse.
        #[arg(long, requires = "promote")]
        force: bool,
    },
    /// Every experiment, newest first.
    List,
}

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Every rule, and the items hidden because the shop unpublished them.
    List,
    /// Never show ITEM.
    Hide {
        /// The item id.
        item: String,
    },
    /// Show ITEM at --position (1 = first) whenever it is allowed.
    Pin {
        /// The item id.
        item: String,
        /// 1 = first.
        #[arg(long, default_value_t = 1)]
        position: u32,
    },
    /// Lift ITEM among the model's candidates.
    Boost {
        /// The item id.
        item: String,
        /// 1.0 lifts the last candidate to the first place.
        #[arg(long, default_value_t = 0.5)]
        strength: f64,
    },
    /// Remove ITEM's rule.
    Clear {
        /// The item id.
        item: String,
    },
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only this job: retrain, quality, retention.
    #[arg(long)]
    pub job: Option<manirec_store::Job>,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Merge, deduplicate, sort and split every training interaction into a new
    /// dataset version.
    ///
    /// One row per (user, item, 5-minute window: timestamp floored to a multiple
    /// of 300 s), the latest kept; sorted by time; the first 80 % train, the rest
    /// test (real interactions only); refunded, cancelled and voided orders left
    /// out. Writes datasets/<version>/{train,test}.parquet and manifest.json
    /// (rows, sha256 of every file, split timestamp, counts by source and type),
    /// and records the version. The first version is v1.0; new data makes v1.1,
    /// v1.2…; --full makes v2.0. Nothing changed: the latest version is answered
    /// and nothing is written.
    Build(DatasetBuildArgs),
    /// The dataset versions, oldest first.
    List,
}

#[derive(Debug, Args)]
pub struct DatasetBuildArgs {
    /// Start a new major version (v(N+1).0), even when nothing changed.
    #[arg(long)]
    pub full: bool,
    /// Also write train.csv and test.csv.
    #[arg(long)]
    pub csv: bool,
    /// Also take interactions imported with --source public (MovieLens…), which
    /// are left out by default: public data is for pre-training, not the shop's
    /// datasets.
    #[arg(long)]
    pub include_public: bool,
}

/// Model kinds `train` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelArg {
    /// Time-decayed popularity, global and per category.
    Popular,
    /// Implicit ALS (Hu, Koren & Volinsky).
    Als,
    /// EASE (Steck, 2019).
    Ease,
    /// Two-tower retrieval (item features, cold start).
    TwoTower,
    /// Session model: item-kNN, (asymmetric) cosine with shrinkage.
    ItemKnn,
    /// Session model: RP3beta random walk (Paudel et al.).
    Rp3beta,
    /// Session model: sequential rules (Ludewig & Jannach).
    Sr,
    /// Session model: V-SKNN session-based kNN (Ludewig & Jannach).
    Vsknn,
    /// Session model: item-kNN, RP3beta, SR and sparse EASE blended by weights.
    Blend,
}

/// What `train --pretrain` pre-trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PretrainArg {
    /// The store's `--source public` interactions.
    Public,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// popular, als, ease, two-tower; session models item-knn, rp3beta, sr, vsknn, blend.
    #[arg(long, value_enum)]
    pub model: ModelArg,
    /// Dataset version (default: the latest ready one).
    #[arg(long, value_name = "V")]
    pub dataset: Option<String>,
    /// Start from the active model of the same kind (ALS, two-tower), adding new users and items.
    #[arg(long)]
    pub warm_start: bool,
    /// Two-tower: pre-train on the store's public interactions (`import
    /// --source public`), then fine-tune on the dataset; reported beside the same
    /// training on the shop alone. Only features both name alike carry over: give
    /// the public items theirs with --pretrain-features.
    #[arg(long, value_enum, value_name = "SOURCE")]
    pub pretrain: Option<PretrainArg>,
    /// CSV of the public items' features: `item_id,category,designer,…` (one
    /// column per feature, named and valued as the shop's; `|` separates values).
    #[arg(long, value_name = "FILE", requires = "pretrain")]
    pub pretrain_features: Option<PathBuf>,
    /// Search hyper-parameters on a validation split cut from train first.
    #[arg(long)]
    pub tune: bool,
    /// The protocol `--tune` scores (default: session for session models, warm
    /// for the others; first-visit suits a two-tower model with --accounts
    /// meant to answer new customers).
    #[arg(long, value_name = "warm|session|first-visit")]
    pub tune_protocol: Option<String>,
    /// Seed of the initialisation and of the search.
    #[arg(long)]
    pub seed: Option<u64>,
    /// ALS latent factors.
    #[arg(long)]
    pub factors: Option<usize>,
    /// ALS iterations.
    #[arg(long)]
    pub iterations: Option<usize>,
    /// ALS L2 regularization.
    #[arg(long)]
    pub regularization: Option<f32>,
    /// ALS confidence slope.
    #[arg(long)]
    pub alpha: Option<f32>,
    /// EASE L2 penalty.
    #[arg(long)]
    pub lambda: Option<f32>,
    /// Two-tower embedding size (a warm start keeps the previous model's).
    #[arg(long)]
    pub dim: Option<usize>,
    /// Two-tower passes over the training pairs (default 5; 1 with --warm-start).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Two-tower learning rate (Adam).
    #[arg(long)]
    pub learning_rate: Option<f32>,
    /// Two-tower softmax temperature.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Two-tower mini-batch size (the in-batch negatives).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Two-tower: embed what the shop's accounts say of each customer
    /// (country, age, … see the README's "Customers' accounts"); the training
    /// then reports the first-visit protocol.
    #[arg(long)]
    pub accounts: bool,
    /// Two-tower with --accounts: share of the training pairs that lost the
    /// user id and kept their account that lose their history too, so the
    /// query tower learns to answer from the account alone (a first visit);
    /// 0.5 by default.
    #[arg(long, value_name = "SHARE")]
    pub history_dropout: Option<f32>,
    /// Session models: weights kept per item (item-kNN, RP3beta, SR) or
    /// neighbour sessions (V-SKNN).
    #[arg(long)]
    pub neighbours: Option<usize>,
    /// Item-kNN shrinkage.
    #[arg(long)]
    pub shrink: Option<f32>,
    /// Item-kNN asymmetric cosine's a in [0, 1] (0.5 = cosine).
    #[arg(long)]
    pub asymmetry: Option<f32>,
    /// Item-kNN and RP3beta train on the signal's values rather than 0/1.
    #[arg(long)]
    pub weighted: bool,
    /// RP3beta: power of the transition probabilities.
    #[arg(long)]
    pub rp3_alpha: Option<f32>,
    /// RP3beta: power of the popularity the target is divided by.
    #[arg(long)]
    pub beta: Option<f32>,
    /// SR: the largest distance between two items of a rule.
    #[arg(long)]
    pub steps: Option<usize>,
    /// V-SKNN: the most recent candidate sessions compared.
    #[arg(long)]
    pub sample: Option<usize>,
    /// Session models: how fast a context item's weight falls with its distance
    /// from the most recent one (1 / (1 + recency * d)).
    #[arg(long)]
    pub recency: Option<f32>,
    /// Blend: weights of item-kNN, RP3beta, SR and sparse EASE (`1,1,1,0.5`).
    #[arg(long, value_delimiter = ',', num_args = 4)]
    pub blend: Option<Vec<f32>>,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Model version (default: the active one, else the latest trained).
    #[arg(long, value_name = "V")]
    pub model_version: Option<String>,
    /// warm (known customers, next items), session (new visitors, from the
    /// first half of their visit) or first-visit (new customers, from their
    /// account alone: what a two-tower model learnt of its features).
    #[arg(long, default_value = "warm", value_name = "warm|session|first-visit")]
    pub protocol: String,
    /// Also write the ranked lists scored, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every model version, oldest first, with its warm metrics.
    List,
    /// Make a version active; the previous active one is retired (one transaction).
    Promote {
        /// The version (e.g. m3).
        version: String,
    },
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only the interactions written since the last export.
    #[arg(long)]
    pub incremental: bool,
    /// csv or parquet.
    #[arg(long, default_value = "csv")]
    pub format: manirec_pipeline::dataset::Format,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Delete what is older than this many days (default: `[schedule]
    /// retention_days`, 365 unless set).
    #[arg(long, value_name = "DAYS")]
    pub older_than: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The customer's email or id.
    #[arg(long, value_name = "EMAIL|ID")]
    pub user: String,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed of the demo shop and of the simulation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop after the pipeline instead of serving.
    #[arg(long)]
    pub no_serve: bool,
    /// Where to serve afterwards.
    #[arg(long, default_value = "127.0.0.1:8080", env = "MANIREC_ADDR")]
    pub addr: String,
    /// The day the shop's history ends (YYYY-MM-DD, UTC); default today. Same
    /// seed and day, same shop.
    #[arg(long, value_name = "DATE", value_parser = parse_day)]
    pub as_of: Option<i64>,
}

fn parse_day(s: &str) -> Result<i64, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| {
            d.and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc()
                .timestamp()
        })
        .map_err(|e| format!("{s:?} is not a YYYY-MM-DD date: {e}"))
}

#[derive(Debug, Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["store", "interactions"])))]
pub struct ImportArgs {
    /// The shop's SQLite file or D1 SQL dump.
    #[arg(long, value_name = "FILE")]
    pub store: Option<PathBuf>,
    /// An interaction CSV file.
    #[arg(long, value_name = "FILE.csv")]
    pub interactions: Option<PathBuf>,
    /// Source recorded for --interactions rows: existing_data, webhook, realtime, public.
    #[arg(long, default_value = "existing_data", requires = "interactions")]
    pub source: Source,
    /// interaction_type of --interactions rows whose file has none.
    #[arg(long, default_value = "rating", requires = "interactions")]
    pub interaction_type: String,
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Do not generate simulated views (existing simulated rows are kept).
    #[arg(long)]
    pub no_simulated: bool,
    /// Seed of the simulated views.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}
