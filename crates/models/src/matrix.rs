//! Ids to dense indices, and the sparse user × item matrix the models train on.

use std::collections::HashMap;

use crate::split::is_anonymous;
use crate::{Error, Interaction, Result, Signal};

/// A bijection between string ids and dense indices `0..len`, in insertion order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vocab {
    ids: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// A vocabulary of `ids` in this order (duplicates keep their first index).
    pub fn from_ids(ids: impl IntoIterator<Item = String>) -> Self {
        let mut v = Vocab::default();
        for id in ids {
            v.insert(&id);
        }
        v
    }

    /// The index of `id`, adding it at the end if new.
    pub fn insert(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.ids.push(id.to_string());
        self.index.insert(id.to_string(), i);
        i
    }

    /// The index of `id`.
    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// The id at `index`.
    pub fn id(&self, index: u32) -> &str {
        &self.ids[index as usize]
    }

    /// All ids, by index.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Compressed sparse rows of f32 values, column indices sorted within each row.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Csr {
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub data: Vec<f32>,
}

impl Csr {
    /// From rows already aggregated (sorted, unique columns).
    pub fn from_rows(rows: impl IntoIterator<Item = Vec<(u32, f32)>>) -> Self {
        let mut m = Csr {
            indptr: vec![0],
            ..Default::default()
        };
        for row in rows {
            for (c, v) in row {
                m.indices.push(c);
                m.data.push(v);
            }
            m.indptr.push(m.indices.len());
        }
        m
    }

    pub fn n_rows(&self) -> usize {
        self.indptr.len() - 1
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.data[a..b])
    }

    /// The transpose, with `n_cols` rows; column indices stay sorted.
    pub fn transpose(&self, n_cols: usize) -> Csr {
        let mut counts = vec![0usize; n_cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for i in 0..n_cols {
            counts[i + 1] += counts[i];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; self.nnz()];
        let mut data = vec![0f32; self.nnz()];
        for r in 0..self.n_rows() {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let p = next[c as usize];
                indices[p] = r as u32;
                data[p] = v;
                next[c as usize] += 1;
            }
        }
        Csr {
            indptr,
            indices,
            data,
        }
    }
}

/// Training rows indexed for the models: the catalogue (every item of the rows,
/// including those seen only through anonymous or excluded rows), the users (real
/// ones only: `anonymous:` ids are popularity, not a history), and one
/// [`Signal`] value per (user, item).
#[derive(Debug, Clone)]
pub struct Interactions {
    /// Users with a row (anonymous ids excluded), by index.
    pub users: Vocab,
    /// The catalogue, by index.
    pub items: Vocab,
    pub(crate) ui: Csr,
    /// The newest timestamp of the rows: "now" of the time decay.
    pub reference_ts: i64,
    /// The signal the values were made with.
    pub signal: Signal,
}

impl Interactions {
    /// Indexes `rows` under `signal`.
    pub fn build(rows: &[Interaction], signal: &Signal) -> Result<Self> {
        Self::build_with_vocab(rows, signal, Vocab::default(), Vocab::default())
    }

    /// Like [`Interactions::build`], with users and items already known keeping
    /// their indices (warm start: a new model extends the old one's rows).
    pub fn build_with_vocab(
        rows: &[Interaction],
        signal: &Signal,
        mut users: Vocab,
        mut items: Vocab,
    ) -> Result<Self> {
        signal.validate()?;
        if rows.is_empty() {
            return Err(Error::Input("no training interactions".into()));
        }
        let reference_ts = rows.iter().map(|r| r.timestamp).max().unwrap_or(0);
        let mut per_user: Vec<Vec<(u32, f32, i64, bool)>> = vec![Vec::new(); users.len()];
        for r in rows {
            let item = items.insert(&r.item_id);
            if is_anonymous(&r.user_id) {
                continue;
            }
            let u = users.insert(&r.user_id) as usize;
            if u == per_user.len() {
                per_user.push(Vec::new());
            }
            per_user[u].push((item, r.weight, r.timestamp, r.synthetic));
        }
        let ui = Csr::from_rows(
            per_user
                .into_iter()
                .map(|rows| signal.aggregate(rows, reference_ts)),
        );
        Ok(Interactions {
            users,
            items,
            ui,
            reference_ts,
            signal: *signal,
        })
    }

    /// Number of (user, item) pairs with a value.
    pub fn nnz(&self) -> usize {
        self.ui.nnz()
    }

    /// A user's (item, value) pairs, items sorted.
    pub fn user_row(&self, user: u32) -> Vec<(u32, f32)> {
        let (c, v) = self.ui.row(user as usize);
        c.iter().copied().zip(v.iter().copied()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_rows_name_items_but_make_no_user() {
        let rows = vec![
            Interaction::rating("u1", "a", 1.0, 1),
            Interaction::rating("anonymous:image:9", "b", 1.0, 2),
            Interaction::rating("u1", "a", 2.0, 3),
        ];
        let m = Interactions::build(&rows, &Signal::default()).unwrap();
        assert_eq!(m.users.ids(), ["u1"]);
        assert_eq!(m.items.ids(), ["a", "b"]);
        assert_eq!(m.user_row(0), vec![(0, 3.0)]);
        let t = m.ui.transpose(m.items.len());
        assert_eq!(t.row(0), (&[0u32][..], &[3.0f32][..]));
        assert_eq!(t.row(1).0.len(), 0);
    }
}
