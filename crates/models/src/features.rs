//! Features: what a model may know of an item or a customer besides their
//! interactions.
//!
//! Each item has a short list of `field=value` strings (`category=tees`,
//! `base=b12`, `designer=d7`, `price_band=2`, `genre=Comedy`). Popularity reads
//! the `category` field (per-category popularity); the two-tower model embeds
//! every feature, so an item with features and no interaction still gets a vector.
//!
//! Customers have the same kind of list, from their shop account (`country=DE`,
//! `gender=F`, `age=30-39`): the two-tower query tower embeds them, so a customer
//! on their first visit, with an account and nothing else, is not a stranger.

use std::collections::HashMap;

/// The field popularity groups items by.
pub const CATEGORY: &str = "category";

/// Item id → its `field=value` features, and user id → theirs; sorted and unique
/// per id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    map: HashMap<String, Vec<String>>,
    users: HashMap<String, Vec<String>>,
}

fn insert_into(map: &mut HashMap<String, Vec<String>>, id: &str, field: &str, value: &str) {
    let list = map.entry(id.to_string()).or_default();
    let feature = format!("{field}={value}");
    if let Err(at) = list.binary_search(&feature) {
        list.insert(at, feature);
    }
}

fn sorted_keys(map: &HashMap<String, Vec<String>>) -> Vec<&str> {
    let mut v: Vec<&str> = map.keys().map(String::as_str).collect();
    v.sort_unstable();
    v
}

impl Features {
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
        insert_into(&mut self.map, item, field, value);
    }

    /// Adds `field=value` to customer `user` (the id interactions carry).
    pub fn insert_user(&mut self, user: &str, field: &str, value: &str) {
        insert_into(&mut self.users, user, field, value);
    }

    /// A customer's features (empty when unknown).
    pub fn user(&self, user: &str) -> &[String] {
        self.users.get(user).map_or(&[], Vec::as_slice)
    }

    /// Every customer with a feature, sorted by id.
    pub fn users(&self) -> Vec<&str> {
        sorted_keys(&self.users)
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
        sorted_keys(&self.map)
    }

    /// How many items have features (customers not counted).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no item has a feature (customers not counted).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_sorted_unique_and_give_the_category() {
        let mut f = Features::new();
        f.insert("a", "designer", "d1");
        f.insert("a", "category", "tees");
        f.insert("a", "designer", "d1");
        assert_eq!(f.get("a"), ["category=tees", "designer=d1"]);
        assert_eq!(f.category("a"), Some("tees"));
        assert_eq!(f.category("b"), None);
        assert!(f.get("b").is_empty());
    }

    #[test]
    fn customers_have_their_own_features() {
        let mut f = Features::new();
        f.insert_user("u1", "country", "DE");
        f.insert_user("u1", "country", "DE");
        f.insert("u1", "category", "tees");
        assert_eq!(f.user("u1"), ["country=DE"]);
        assert_eq!(f.get("u1"), ["category=tees"]);
        assert_eq!(f.users(), ["u1"]);
        assert!(f.user("u2").is_empty());
        assert_eq!(f.len(), 1);
    }
}
