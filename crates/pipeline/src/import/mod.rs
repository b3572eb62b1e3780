//! Bringing outside data into the store.
//!
//! - [`shop`]: the shop's database (a SQLite file, or a D1 SQL dump read through
//!   [`dump`]) into the shop mirror, table by table, row by row: a bad row is
//!   counted with its reason, never the end of the import.
//! - [`interactions_csv`]: interaction files in the seed's CSV format (and the
//!   MovieLens shapes) into training interactions.
//! - [`features_csv`]: features of items the mirror does not describe (public
//!   data pre-trained on), read at training, never stored.

pub mod dump;
pub mod features_csv;
pub mod interactions_csv;
pub mod shop;
