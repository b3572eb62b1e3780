//! Item features: what a model may know of an item besides its interactions.
//!
//! Each item has a short list of `field=value` strings (`category=tees`,
//! `base=b12`, `designer=d7`, `price_band=2`, `genre=Comedy`). Popularity reads
//! the `category` field (per-category popularity); the two-tower model embeds
//! every feature, so an item with features and no interaction still gets a vector.

use std::collections::HashMap;

/// The field popularity groups items by.
pub const CATEGORY: &str = "category";

/// Item id → its `field=value` features, sorted and unique per item.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemFeatures {
    map: HashMap<String, Vec<String>>,
}

impl ItemFeatures {
    /// No features.
    pub fn new() -> Self {
        Self::default()
    }

    /// Items whose only feature is their category.
    pub fn from_categories(categories: &HashMap<String, String>) -> Self {
        let mut f = Self::new();
        for (item, cat) in categories {
            f.insert(item, CATEGORY, cat);
        }
        f
    }

    /// Adds `field=value` to `item` (a feature it already has is not repeated).
    pub fn insert(&mut self, item: &str, field: &str, value: &str) {
        let list = self.map.entry(item.to_string()).or_default();
        let feature = format!("{field}={value}");
        if let Err(at) = list.binary_search(&feature) {
            list.insert(at, feature);
        }
    }

    /// An item's features (empty when unknown).
    pub fn get(&self, item: &str) -> &[String] {
        self.map.get(item).map_or(&[], Vec::as_slice)
    }

    /// The value of `field` for `item`, when it has one.
    pub fn value(&self, item: &str, field: &str) -> Option<&str> {
        self.get(item).iter().find_map(|f| {
            f.strip_prefix(field)
                .and_then(|rest| rest.strip_prefix('='))
        })
    }

    /// The item's category, when known.
    pub fn category(&self, item: &str) -> Option<&str> {
        self.value(item, CATEGORY)
    }

    /// Every item with a feature, sorted by id.
    pub fn items(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.map.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// How many items have features.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no item has a feature.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_sorted_unique_and_give_the_category() {
        let mut f = ItemFeatures::new();
        f.insert("a", "designer", "d1");
        f.insert("a", "category", "tees");
        f.insert("a", "designer", "d1");
        assert_eq!(f.get("a"), ["category=tees", "designer=d1"]);
        assert_eq!(f.category("a"), Some("tees"));
        assert_eq!(f.category("b"), None);
        assert!(f.get("b").is_empty());
    }
}
