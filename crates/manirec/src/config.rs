//! Settings: defaults, then `<data-dir>/manirec.toml`, then `MANIREC_*`
//! environment variables, then flags. Validated once, here, so commands can
//! trust what they get.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use manirec_jobs::{JobsConfig, PollConfig, Schedule};
use manirec_pipeline::experiments::ExperimentConfig;
use manirec_pipeline::identity::UserKey;
use manirec_pipeline::retrain::RetrainConfig;
use manirec_pipeline::sync::Weights;
use manirec_pipeline::trigger::TriggerConfig;
use manirec_server::{Limits, ServerConfig, Storefront};
use manirec_store::{Objects, Store};
use serde::Deserialize;

/// What `<data-dir>/manirec.toml` may set. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    database_url: Option<String>,
    object_store: Option<String>,
    shoplazza_secret: Option<String>,
    admin_token: Option<String>,
    storefront_secret: Option<String>,
    user_key: Option<String>,
    notify_url: Option<String>,
    shoplazza_api: Option<String>,
    shoplazza_token: Option<String>,
    reload_seconds: Option<u64>,
    #[serde(default)]
    sync: SyncSettings,
    #[serde(default)]
    trigger: TriggerConfig,
    #[serde(default)]
    retrain: RetrainConfig,
    #[serde(default)]
    experiments: ExperimentConfig,
    #[serde(default)]
    schedule: Schedule,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    storefront: Storefront,
}

/// `[sync]` in manirec.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// Minutes between scheduled syncs (and reconciliation polls) in `serve`.
    pub interval_minutes: u64,
    /// Event weights (`[sync.weights] by_type = {...}, other = 0.5`).
    pub weights: Weights,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            interval_minutes: 60,
            weights: Weights::default(),
        }
    }
}

/// Resolved settings.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub object_store: String,
    // Read by the live-data and serving commands.
    pub shoplazza_secret: Option<String>,
    pub admin_token: Option<String>,
    pub notify_url: Option<String>,
    /// The shop's API base (`https://SHOP.myshoplaza.com`), for the reconciliation poll.
    pub shoplazza_api: Option<String>,
    pub shoplazza_token: Option<String>,
    /// How often `serve` reloads what it serves from the store (a promotion
    /// made by another replica or by the command line reaches it this soon).
    pub reload_seconds: u64,
    pub sync: SyncSettings,
    pub trigger: TriggerConfig,
    pub retrain: RetrainConfig,
    pub experiments: ExperimentConfig,
    pub schedule: Schedule,
    pub limits: Limits,
    /// `[storefront]`: where the shop's product pages are.
    pub storefront: Storefront,
    user_key: Option<String>,
    storefront_secret: Option<String>,
}

/// Shortest secret accepted: a short HMAC key or bearer token can be guessed.
const MIN_SECRET: usize = 16;

/// A secret from the environment (set, even empty, wins) or the file; empty
/// or shorter than [`MIN_SECRET`] bytes is refused, whichever the source, so
/// that `shoplazza_secret = ""` can never become a key anyone can sign with.
fn secret(name: &str, key: &str, from_file: Option<String>) -> Result<Option<String>> {
    let (value, source) = match std::env::var(name) {
        Ok(v) => (v, format!("the environment variable {name}")),
        Err(_) => match from_file {
            Some(v) => (v, format!("{key} in manirec.toml")),
            None => return Ok(None),
        },
    };
    if value.len() < MIN_SECRET {
        bail!(
            "{source} is {} bytes long; a secret must be at least {MIN_SECRET} bytes \
             (generate one with `openssl rand -hex 32`, or unset it to turn its feature off)",
            value.len()
        );
    }
    Ok(Some(value))
}

impl Settings {
    /// Loads the settings of `data_dir` (created if missing).
    pub fn load(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
        let file_path = data_dir.join("manirec.toml");
        let file: FileSettings = match std::fs::read_to_string(&file_path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("{} is not valid settings", file_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileSettings::default(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", file_path.display()))
            }
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Settings {
            database_url: env("MANIREC_DATABASE_URL")
                .or(file.database_url)
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("manirec.db").display())),
            object_store: env("MANIREC_OBJECT_STORE")
                .or(file.object_store)
                .unwrap_or_else(|| format!("file://{}", data_dir.join("objects").display())),
            shoplazza_secret: secret(
                "MANIREC_SHOPLAZZA_SECRET",
                "shoplazza_secret",
                file.shoplazza_secret,
            )?,
            admin_token: secret("MANIREC_ADMIN_TOKEN", "admin_token", file.admin_token)?,
            storefront_secret: secret(
                "MANIREC_STOREFRONT_SECRET",
                "storefront_secret",
                file.storefront_secret,
            )?,
            notify_url: env("MANIREC_NOTIFY_URL").or(file.notify_url),
            user_key: env("MANIREC_USER_KEY").or(file.user_key),
            shoplazza_api: env("MANIREC_SHOPLAZZA_API").or(file.shoplazza_api),
            shoplazza_token: env("MANIREC_SHOPLAZZA_TOKEN").or(file.shoplazza_token),
            sync: file.sync,
            trigger: file.trigger,
            retrain: file.retrain,
            experiments: file.experiments,
            schedule: file.schedule,
            limits: {
                file.limits
                    .validate()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file_path.display()))?;
                file.limits
            },
            reload_seconds: match env("MANIREC_RELOAD_SECONDS") {
                Some(v) => v.parse().ok().filter(|&n| n > 0).with_context(|| {
                    format!("MANIREC_RELOAD_SECONDS {v:?} is not a number of seconds above 0")
                })?,
                None => match file.reload_seconds {
                    Some(0) => bail!("reload_seconds in {} must be above 0", file_path.display()),
                    Some(n) => n,
                    None => 30,
                },
            },
            storefront: {
                let mut storefront = file.storefront;
                if let Some(url) = env("MANIREC_STOREFRONT_PRODUCT_URL") {
                    storefront.product_url = url;
                }
                storefront.validate().map_err(|e| {
                    anyhow::anyhow!(
                        "[storefront] in {} or MANIREC_STOREFRONT_PRODUCT_URL: {e}",
                        file_path.display()
                    )
                })?;
                storefront
            },
            data_dir,
        })
    }

    /// Opens the configured database (see [`open_database`]).
    pub fn open_store(&self) -> Result<Store> {
        open_database(&self.database_url).context("check MANIREC_DATABASE_URL")
    }

    /// Opens the configured object store.
    pub fn objects(&self) -> Result<Objects> {
        Ok(Objects::from_url(&self.object_store)?)
    }

    /// The key of the user-id hash: configured, or generated once and kept in
    /// `<data-dir>/user.key` (losing it changes every user id).
    pub fn user_key(&self) -> Result<UserKey> {
        if let Some(hex_key) = &self.user_key {
            return UserKey::from_hex(hex_key)
                .map_err(|e| anyhow::anyhow!("MANIREC_USER_KEY: {e}"));
        }
        let path = self.data_dir.join("user.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                UserKey::from_hex(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = UserKey::from_bytes(rand::random());
                write_private(&path, &key.to_hex())?;
                tracing::info!(path = %path.display(), "generated the user key; back it up with the database");
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

impl Settings {
    /// The key of the shoppers' user tokens: configured, or generated once and
    /// kept in `<data-dir>/storefront.secret` (the shop's theme signs with it).
    pub fn storefront_secret(&self) -> Result<String> {
        if let Some(secret) = &self.storefront_secret {
            return Ok(secret.clone());
        }
        let path = self.data_dir.join("storefront.secret");
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().len() >= MIN_SECRET => Ok(text.trim().to_owned()),
            Ok(_) => bail!(
                "{} holds fewer than {MIN_SECRET} bytes; delete it to generate a new one",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = hex::encode(rand::random::<[u8; 32]>());
                write_private(&path, &secret)?;
                tracing::info!(path = %path.display(), "generated the storefront secret; the shop's theme signs user tokens with it");
                Ok(secret)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The reconciliation poll's configuration, when the shop's API is set.
    pub fn poll_config(&self) -> Option<PollConfig> {
        let base = self.shoplazza_api.as_ref()?;
        let base_url = if base.contains("://") {
            base.clone()
        } else {
            format!("https://{base}")
        };
        Some(PollConfig {
            base_url,
            access_token: self.shoplazza_token.clone().unwrap_or_default(),
            interval: self.sync_interval(),
        })
    }

    fn sync_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.sync.interval_minutes.max(1) * 60)
    }

    /// What the jobs run with (`serve`'s scheduler, and the commands that run
    /// a job: sync, retrain --run, poll, report, cleanup).
    pub fn jobs_config(&self) -> Result<JobsConfig> {
        let mut config = JobsConfig::new(self.user_key()?);
        config.notify_url = self.notify_url.clone();
        config.weights = self.sync.weights.clone();
        config.trigger = self.trigger.clone();
        config.sync_interval = self.sync_interval();
        config.poll = self.poll_config();
        config.retrain = self.retrain.clone();
        config.experiments = self.experiments.clone();
        config.schedule = self.schedule.clone();
        Ok(config)
    }

    /// What `serve` runs with.
    pub fn server_config(&self) -> Result<ServerConfig> {
        let mut config = ServerConfig::new(self.jobs_config()?);
        config.shoplazza_secret = self.shoplazza_secret.clone();
        config.admin_token = self.admin_token.clone();
        config.storefront_secret = self.storefront_secret()?;
        config.limits = self.limits.clone();
        config.storefront = self.storefront.clone();
        config.reload_interval = std::time::Duration::from_secs(self.reload_seconds);
        Ok(config)
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Opens a database by URL: `sqlite://PATH` (also `sqlite:PATH`) or
/// `postgres://USER:PASSWORD@HOST:PORT/DB`, migrating it to this build's schema.
pub fn open_database(url: &str) -> Result<Store> {
    let normalised = match url.strip_prefix("sqlite:").filter(|p| !p.starts_with("//")) {
        Some(path) => format!("sqlite://{path}"),
        None => url.to_string(),
    };
    if !(normalised.starts_with("sqlite://")
        || normalised.starts_with("postgres://")
        || normalised.starts_with("postgresql://"))
    {
        bail!("database URL {url:?} is neither sqlite://PATH nor postgres://USER:PASSWORD@HOST/DB");
    }
    Store::connect(&normalised).with_context(|| {
        format!(
            "opening the database {}",
            manirec_store::redacted_url(&normalised)
        )
    })
}
