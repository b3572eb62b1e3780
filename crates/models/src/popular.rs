//! Time-decayed popularity, global and per category: the baseline every other
//! model is compared with and the fallback when a model knows nothing of a user.

use serde::{Deserialize, Serialize};

use crate::{Features, Interaction, Interactions, Result, Signal, Vocab};

/// Popularity settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PopularConfig {
    /// Half-life of a row's contribution, days (relative to the newest row); `None`: no decay.
    pub half_life_days: Option<f64>,
    /// Count rows by their event weight (`true`) or one each (`false`).
    pub weighted: bool,
}

impl Default for PopularConfig {
    /// Unweighted counts without decay: on MovieLens' warm protocol the plain count
    /// was the strongest popularity (a high rating says little about how many watch).
    fn default() -> Self {
        PopularConfig {
            half_life_days: None,
            weighted: false,
        }
    }
}

/// A popularity model: one score per catalogue item, and each item's category.
#[derive(Debug, Clone)]
pub struct Popular {
    pub(crate) items: Vocab,
    pub(crate) scores: Vec<f32>,
    pub(crate) categories: Vocab,
    /// Category index per item, `u32::MAX` when unknown.
    pub(crate) item_category: Vec<u32>,
    pub(crate) config: PopularConfig,
    /// Items by score, best first (ties to the lower index), scores that are
    /// not finite left out: built on first use, so a stranger's answer walks
    /// a few items instead of ranking the whole catalogue.
    pub(crate) ranking: std::sync::OnceLock<Vec<u32>>,
}

/// Equal models: the ranking is derived (and built on first use), not compared.
impl PartialEq for Popular {
    fn eq(&self, other: &Self) -> bool {
        self.items == other.items
            && self.scores == other.scores
            && self.categories == other.categories
            && self.item_category == other.item_category
            && self.config == other.config
    }
}

/// Marks an item without a category in [`Popular`]'s table.
pub(crate) const NO_CATEGORY: u32 = u32::MAX;

impl Popular {
    /// Scores every item of `data`'s catalogue from all of `rows`, anonymous ones
    /// included (an image view is popularity); synthetic rows follow `data`'s signal.
    pub fn fit(
        rows: &[Interaction],
        data: &Interactions,
        config: PopularConfig,
        features: Option<&Features>,
    ) -> Result<Self> {
        let decay = Signal {
            half_life_days: config.half_life_days,
            synthetic: data.signal.synthetic,
        };
        decay.validate()?;
        let mut scores = vec![0f32; data.items.len()];
        for r in rows {
            let Some(i) = data.items.get(&r.item_id) else {
                continue;
            };
            let w = if config.weighted { r.weight } else { 1.0 };
            if let Some(v) = decay.row_value(w, r.timestamp, r.synthetic, data.reference_ts) {
                scores[i as usize] += v;
            }
        }
        let mut cats = Vocab::default();
        let item_category = data
            .items
            .ids()
            .iter()
            .map(|id| match features.and_then(|f| f.category(id)) {
                Some(c) => cats.insert(c),
                None => NO_CATEGORY,
            })
            .collect();
        Ok(Popular {
            items: data.items.clone(),
            scores,
            categories: cats,
            item_category,
            config,
            ranking: Default::default(),
        })
    }

    /// Items by score, best first: the order [`crate::Model`]'s top-k gives
    /// popularity scores (ties go to the lower index).
    pub(crate) fn ranking(&self) -> &[u32] {
        self.ranking.get_or_init(|| {
            let mut order: Vec<u32> = (0..self.scores.len() as u32)
                .filter(|&i| self.scores[i as usize].is_finite())
                .collect();
            order.sort_by(|&a, &b| {
                self.scores[b as usize]
                    .total_cmp(&self.scores[a as usize])
                    .then(a.cmp(&b))
            });
            order
        })
    }

    /// The score of every catalogue item.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// The category of an item, when known.
    pub fn category_of(&self, item: u32) -> Option<&str> {
        match self.item_category.get(item as usize) {
            Some(&c) if c != NO_CATEGORY => Some(self.categories.id(c)),
            _ => None,
        }
    }

    /// Whether `item` belongs to `category`.
    pub(crate) fn in_category(&self, item: u32, category: u32) -> bool {
        self.item_category[item as usize] == category
    }

    /// The index of a category name.
    pub(crate) fn category_index(&self, name: &str) -> Option<u32> {
        self.categories.get(name)
    }
}
