//! manirec's recommender engine: interactions in, a model out, metrics out.
//!
//! The crate knows nothing of SQLite, object stores or HTTP. Its inputs are plain
//! [`Interaction`] rows (the dataset files, or anything a caller builds), its
//! outputs are a [`Model`] (serialisable to safetensors bytes) and an
//! [`evaluate::Report`] of the contract's metrics. The main types:
//!
//! - [`Interaction`] and [`split::temporal_split`]: the contract's dataset split
//!   (5-minute dedup keeping the latest, time order, 80/20, real rows only in test).
//! - [`Signal`]: how rows become one training value per (user, item): summed
//!   event weights, optional time decay, synthetic rows kept, down-weighted or dropped.
//! - [`Model`]: [`Popular`] (time-decayed popularity, global and per category, the
//!   cold-start fallback), [`Als`] (implicit ALS with fold-in and warm start),
//!   [`Ease`] (Steck's closed-form item-item model), [`TwoTower`] (a retrieval
//!   model whose candidate tower embeds [`Features`], so new items get a
//!   vector before their first interaction), and the session models of
//!   [`session`] ([`ItemGraph`]: item-kNN, RP3beta, SR; [`Vsknn`]), which score a
//!   visitor from the ordered items of their session. Train with [`train`].
//! - [`evaluate`]: the contract's `warm` and `session` protocols, metrics with
//!   bootstrap intervals, always beside popularity, and the ranked-list dump.
//! - [`tune`]: a seeded hyper-parameter search on a validation split cut from train.
#![deny(missing_docs)]

pub mod als;
pub mod ann;
pub mod ease;
mod error;
pub mod evaluate;
mod features;
mod io;
mod linalg;
mod matrix;
mod model;
pub mod popular;
pub mod session;
mod signal;
pub mod split;
#[cfg(test)]
mod tests;
pub mod tune;
pub mod two_tower;

pub use als::{Als, AlsConfig};
pub use ease::{Ease, EaseConfig};
pub use error::{Error, Result};
pub use features::Features;
pub use matrix::{Interactions, Vocab};
pub use model::{train, Anchor, Model, ModelKind, ModelSpec, Request, Scored};
pub use popular::{Popular, PopularConfig};
pub use session::{ItemGraph, SessionConfig, Vsknn};
pub use signal::{Signal, SyntheticPolicy};
pub use split::{is_anonymous, is_visitor, temporal_split, Interaction, Split, ANONYMOUS_PREFIX};
pub use two_tower::{TwoTower, TwoTowerConfig};
