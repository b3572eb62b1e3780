//! A realistic print-on-demand shop, generated from a seed.
//!
//! The demo, the tests' larger fixtures and the benchmarks need a shop that
//! behaves like ManiDala's: thousands of base products in categories, designers
//! with a style and a following, their end products, customers with tastes who
//! come back, a few hundred orders, design images whose view counts are
//! heavy-tailed, and weeks of storefront behaviour with a real funnel (views ≫
//! clicks ≫ carts ≫ purchases). Tastes are real structure (a customer prefers a
//! theme and a category), so models have something to learn and popularity has
//! something to lose to.
//!
//! [`generate`] builds a [`Shop`] in memory; [`Shop::write_sqlite`] writes it in
//! the shop's own schema (the D1 tables, with the quirks of a real shop: integer
//! and UUID ids, text timestamps, extra columns), which is what `manirec import`
//! reads.
#![deny(missing_docs)]

mod generate;
mod write;

pub use generate::{
    generate, AccountRow, BaseProductRow, EndProductRow, ImageRow, OrderRow, Shop, ShopSpec,
};
