//! Model artifacts: safetensors files.
//!
//! Layout (format version 1). Tensors, all little-endian:
//! - `items.json`, `users.json`, `categories.json` (U8): UTF-8 JSON arrays of ids
//!   by index (`users.json`: ALS only);
//! - `popular.scores` (F32, [items]), `popular.item_category` (U32, [items],
//!   4294967295 = none);
//! - ALS: `als.user_factors` (F32, [users, factors]), `als.item_factors` (F32, [items, factors]);
//! - EASE: `ease.active` (U32, [active]: catalogue index of each active item),
//!   then the dense model's `ease.b` (F32, [active, active], row-major, B[i][j])
//!   or the sparse one's `ease.indptr` (U64, [active + 1]), `ease.indices` (U32,
//!   [nnz]), `ease.data` (F32, [nnz]): rows of B by active position;
//! - two-tower: `users.json`, `features.json` (the `field=value` strings by index),
//!   `two_tower.feat_ptr` (U32, [items + 1]) and `two_tower.feat_idx` (U32, [n]):
//!   each item's features, the ones it was trained with, so a reloaded model embeds
//!   cold items from them; `two_tower.user_emb`, `two_tower.item_emb`,
//!   `two_tower.hist_emb`, `two_tower.feat_emb` (F32, [rows, dim]); `cold.json`,
//!   `two_tower.cold_ptr`, `two_tower.cold_idx`: items with features and no
//!   training row, and their features (absent in older two-tower artifacts);
//!   `accounts.json`, `two_tower.account_ptr`, `two_tower.account_idx`: customers
//!   with account features (`user:field=value` in `features.json`), trained on or
//!   not (absent in older artifacts: none). The candidate vectors are recomputed
//!   on load (same code, same order, same bits);
//! - item-kNN, RP3beta, SR, blend: `graph.indptr` (U64, [items + 1]), `graph.indices`
//!   (U32, [nnz]), `graph.data` (F32, [nnz]): the sparse item × item weights, rows
//!   by catalogue index;
//! - V-SKNN: `vsknn.indptr` (U64, [sessions + 1]), `vsknn.indices` (U32, [nnz]):
//!   each training session's distinct items in visit order (older artifacts:
//!   sorted; their specs have no position decay, so order is never read),
//!   sessions oldest first (the item → sessions index is rebuilt on load).
//!
//! Header metadata: `format` = `manirec-model`, `format_version` = `1`, `spec`
//! (the [`crate::ModelSpec`] as JSON), `reference_ts`. Loading restores every
//! float bit for bit; derived values (ALS' YᵀY) are recomputed in a fixed order,
//! so a reloaded model scores exactly as the one saved.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::als::Als;
use crate::ease::{Ease, Weights, INACTIVE};
use crate::matrix::Csr;
use crate::model::Inner;
use crate::popular::Popular;
use crate::session::{ItemGraph, Vsknn};
use crate::{Error, Model, ModelSpec, Result, Vocab};

const FORMAT: &str = "manirec-model";
const FORMAT_VERSION: &str = "1";

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u64_bytes(v: &[usize]) -> Vec<u8> {
    v.iter().flat_map(|&x| (x as u64).to_le_bytes()).collect()
}

fn json_bytes(v: &Vocab) -> Vec<u8> {
    serde_json::to_vec(v.ids()).expect("ids serialise")
}

impl Model {
    /// The model as a safetensors file (see the module's layout).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut put = |name: &str, dtype: Dtype, shape: Vec<usize>, data: Vec<u8>| {
            owned.push((name.into(), dtype, shape, data))
        };
        let items = json_bytes(self.items());
        put("items.json", Dtype::U8, vec![items.len()], items);
        let cats = json_bytes(&self.popular.categories);
        put("categories.json", Dtype::U8, vec![cats.len()], cats);
        let n = self.items().len();
        put(
            "popular.scores",
            Dtype::F32,
            vec![n],
            f32_bytes(&self.popular.scores),
        );
        put(
            "popular.item_category",
            Dtype::U32,
            vec![n],
            u32_bytes(&self.popular.item_category),
        );
        match &self.inner {
            Inner::Popular => {}
            Inner::Als(a) => {
                let users = json_bytes(&a.users);
                put("users.json", Dtype::U8, vec![users.len()], users);
                let f = a.config.factors;
                put(
                    "als.user_factors",
                    Dtype::F32,
                    vec![a.users.len(), f],
                    f32_bytes(&a.user_factors),
                );
                put(
                    "als.item_factors",
                    Dtype::F32,
                    vec![a.items.len(), f],
                    f32_bytes(&a.item_factors),
                );
            }
            Inner::TwoTower(t) => {
                let users = json_bytes(&t.users);
                put("users.json", Dtype::U8, vec![users.len()], users);
                let feats = json_bytes(&t.features);
                put("features.json", Dtype::U8, vec![feats.len()], feats);
                let d = t.config.dim;
                put(
                    "two_tower.feat_ptr",
                    Dtype::U32,
                    vec![t.feat_ptr.len()],
                    u32_bytes(&t.feat_ptr),
                );
                put(
                    "two_tower.feat_idx",
                    Dtype::U32,
                    vec![t.feat_idx.len()],
                    u32_bytes(&t.feat_idx),
                );
                for (ids, ptr, idx, rows) in [
                    (
                        "cold.json",
                        "two_tower.cold_ptr",
                        "two_tower.cold_idx",
                        &t.cold,
                    ),
                    (
                        "accounts.json",
                        "two_tower.account_ptr",
                        "two_tower.account_idx",
                        &t.accounts,
                    ),
                ] {
                    let names = json_bytes(&rows.ids);
                    put(ids, Dtype::U8, vec![names.len()], names);
                    put(ptr, Dtype::U32, vec![rows.ptr.len()], u32_bytes(&rows.ptr));
                    put(idx, Dtype::U32, vec![rows.idx.len()], u32_bytes(&rows.idx));
                }
                for (name, w) in [
                    ("two_tower.user_emb", &t.user_emb),
                    ("two_tower.item_emb", &t.item_emb),
                    ("two_tower.hist_emb", &t.hist_emb),
                    ("two_tower.feat_emb", &t.feat_emb),
                ] {
                    put(name, Dtype::F32, vec![w.len() / d, d], f32_bytes(w));
                }
            }
            Inner::Graph(g) => {
                let w = &g.w;
                put(
                    "graph.indptr",
                    Dtype::U64,
                    vec![w.indptr.len()],
                    u64_bytes(&w.indptr),
                );
                put(
                    "graph.indices",
                    Dtype::U32,
                    vec![w.nnz()],
                    u32_bytes(&w.indices),
                );
                put("graph.data", Dtype::F32, vec![w.nnz()], f32_bytes(&w.data));
            }
            Inner::Vsknn(v) => {
                let s = &v.sessions;
                put(
                    "vsknn.indptr",
                    Dtype::U64,
                    vec![s.indptr.len()],
                    u64_bytes(&s.indptr),
                );
                put(
                    "vsknn.indices",
                    Dtype::U32,
                    vec![s.nnz()],
                    u32_bytes(&s.indices),
                );
            }
            Inner::Ease(e) => {
                let m = e.active.len();
                put("ease.active", Dtype::U32, vec![m], u32_bytes(&e.active));
                match &e.weights {
                    Weights::Dense(b) => put("ease.b", Dtype::F32, vec![m, m], f32_bytes(b)),
                    Weights::Sparse(w) => {
                        put(
                            "ease.indptr",
                            Dtype::U64,
                            vec![w.indptr.len()],
                            u64_bytes(&w.indptr),
                        );
                        put(
                            "ease.indices",
                            Dtype::U32,
                            vec![w.nnz()],
                            u32_bytes(&w.indices),
                        );
                        put("ease.data", Dtype::F32, vec![w.nnz()], f32_bytes(&w.data));
                    }
                }
            }
        }
        let views: Vec<(String, TensorView<'_>)> = owned
            .iter()
            .map(|(name, dtype, shape, data)| {
                TensorView::new(*dtype, shape.clone(), data)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::Artifact(e.to_string()))
            })
            .collect::<Result<_>>()?;
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("format_version".to_string(), FORMAT_VERSION.to_string()),
            (
                "spec".to_string(),
                serde_json::to_string(&self.spec).expect("spec serialises"),
            ),
            ("reference_ts".to_string(), self.reference_ts.to_string()),
        ]);
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Artifact(e.to_string()))?;
        Ok(canonical_header(bytes))
    }

    /// A model from [`Model::to_bytes`]' output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        let bad = |m: String| Error::Artifact(m);
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad("not a manirec model".into()));
        }
        if meta.get("format_version").map(String::as_str) != Some(FORMAT_VERSION) {
            return Err(bad(format!(
                "format version {:?}, this build reads {FORMAT_VERSION}",
                meta.get("format_version")
            )));
        }
        let spec: ModelSpec =
            serde_json::from_str(meta.get("spec").ok_or_else(|| bad("no spec".into()))?)
                .map_err(|e| bad(format!("spec: {e}")))?;
        let reference_ts: i64 = meta
            .get("reference_ts")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no reference_ts".into()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let raw = |name: &str, dtype: Dtype| -> Result<(Vec<usize>, Vec<u8>)> {
            let t = st.tensor(name).map_err(|e| bad(format!("{name}: {e}")))?;
            if t.dtype() != dtype {
                return Err(bad(format!(
                    "{name}: dtype {:?}, expected {dtype:?}",
                    t.dtype()
                )));
            }
            Ok((t.shape().to_vec(), t.data().to_vec()))
        };
        let f32s = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let (s, d) = raw(name, Dtype::F32)?;
            Ok((
                s,
                d.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ))
        };
        let u32s = |name: &str| -> Result<Vec<u32>> {
            let (_, d) = raw(name, Dtype::U32)?;
            Ok(d.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let u64s = |name: &str| -> Result<Vec<usize>> {
            let (_, d) = raw(name, Dtype::U64)?;
            d.chunks_exact(8)
                .map(|c| {
                    usize::try_from(u64::from_le_bytes([
                        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
                    ]))
                    .map_err(|_| bad(format!("{name}: offset too large")))
                })
                .collect()
        };
        // A sparse matrix whose columns index `n_cols` things: checked, never trusted.
        let csr =
            |prefix: &str, rows: Option<usize>, n_cols: usize, with_data: bool| -> Result<Csr> {
                let indptr = u64s(&format!("{prefix}.indptr"))?;
                let indices = u32s(&format!("{prefix}.indices"))?;
                let data = if with_data {
                    f32s(&format!("{prefix}.data"))?.1
                } else {
                    vec![1.0; indices.len()]
                };
                let ok = indptr.first() == Some(&0)
                    && rows.is_none_or(|r| indptr.len() == r + 1)
                    && indptr.windows(2).all(|w| w[0] <= w[1])
                    && indptr.last() == Some(&indices.len())
                    && data.len() == indices.len()
                    && indices.iter().all(|&c| (c as usize) < n_cols);
                if !ok {
                    return Err(bad(format!("{prefix}: sparse matrix does not match")));
                }
                Ok(Csr {
                    indptr,
                    indices,
                    data,
                })
            };
        let vocab = |name: &str| -> Result<Vocab> {
            let (_, d) = raw(name, Dtype::U8)?;
            let ids: Vec<String> =
                serde_json::from_slice(&d).map_err(|e| bad(format!("{name}: {e}")))?;
            let v = Vocab::from_ids(ids.iter().cloned());
            if v.len() != ids.len() {
                return Err(bad(format!("{name}: duplicate ids")));
            }
            Ok(v)
        };
        let items = vocab("items.json")?;
        let n = items.len();
        let categories = vocab("categories.json")?;
        let (_, scores) = f32s("popular.scores")?;
        let item_category = u32s("popular.item_category")?;
        if scores.len() != n || item_category.len() != n {
            return Err(bad("popularity tables do not match the catalogue".into()));
        }
        if item_category
            .iter()
            .any(|&c| c != crate::popular::NO_CATEGORY && c as usize >= categories.len())
        {
            return Err(bad("unknown category index".into()));
        }
        let popular = Popular {
            items: items.clone(),
            scores,
            categories,
            item_category,
            config: spec.popular,
            ranking: Default::default(),
        };
        let inner = match spec.kind {
            crate::ModelKind::Popular => Inner::Popular,
            crate::ModelKind::Als => {
                let users = vocab("users.json")?;
                let f = spec.als.factors;
                let (su, user_factors) = f32s("als.user_factors")?;
                let (si, item_factors) = f32s("als.item_factors")?;
                if su != [users.len(), f] || si != [n, f] {
                    return Err(bad("ALS factor shapes do not match".into()));
                }
                let yty = spec.als.run(|| crate::als::gram(&item_factors, f))?;
                Inner::Als(Als {
                    users,
                    items: items.clone(),
                    user_factors,
                    item_norms: crate::als::item_norms(&item_factors, f),
                    item_factors,
                    config: spec.als,
                    signal: spec.signal,
                    yty,
                })
            }
            crate::ModelKind::TwoTower => {
                spec.two_tower
                    .validate()
                    .map_err(|e| bad(format!("two-tower spec: {e}")))?;
                let users = vocab("users.json")?;
                let features = vocab("features.json")?;
                let d = spec.two_tower.dim;
                let feat_ptr = u32s("two_tower.feat_ptr")?;
                let feat_idx = u32s("two_tower.feat_idx")?;
                let ptr_ok = feat_ptr.len() == n + 1
                    && feat_ptr.first() == Some(&0)
                    && feat_ptr.windows(2).all(|w| w[0] <= w[1])
                    && feat_ptr.last().map(|&p| p as usize) == Some(feat_idx.len());
                if !ptr_ok || feat_idx.iter().any(|&f| f as usize >= features.len()) {
                    return Err(bad("two-tower feature table does not match".into()));
                }
                let table = |name: &str, rows: usize| -> Result<Vec<f32>> {
                    let (shape, w) = f32s(name)?;
                    if shape != [rows, d] {
                        return Err(bad(format!(
                            "{name}: shape {shape:?}, expected [{rows}, {d}]"
                        )));
                    }
                    Ok(w)
                };
                let user_emb = table("two_tower.user_emb", users.len())?;
                let item_emb = table("two_tower.item_emb", n)?;
                let hist_emb = table("two_tower.hist_emb", n)?;
                let feat_emb = table("two_tower.feat_emb", features.len())?;
                // Absent in older artifacts: none.
                let rows = |ids: &str, ptr: &str, idx: &str, what: &str| {
                    if !st.names().contains(&ids) {
                        return Ok(Default::default());
                    }
                    let r = crate::two_tower::FeatureRows {
                        ids: vocab(ids)?,
                        ptr: u32s(ptr)?,
                        idx: u32s(idx)?,
                    };
                    if !r.is_consistent(features.len()) {
                        return Err(bad(format!("two-tower {what} do not match")));
                    }
                    Ok(r)
                };
                let cold = rows(
                    "cold.json",
                    "two_tower.cold_ptr",
                    "two_tower.cold_idx",
                    "cold items",
                )?;
                let accounts = rows(
                    "accounts.json",
                    "two_tower.account_ptr",
                    "two_tower.account_idx",
                    "account features",
                )?;
                let mut t = crate::TwoTower {
                    users,
                    items: items.clone(),
                    features,
                    feat_ptr,
                    feat_idx,
                    user_emb,
                    item_emb,
                    hist_emb,
                    feat_emb,
                    config: spec.two_tower,
                    candidates: Vec::new(),
                    cold,
                    accounts,
                };
                t.refresh_candidates();
                Inner::TwoTower(Box::new(t))
            }
            crate::ModelKind::ItemKnn
            | crate::ModelKind::Rp3beta
            | crate::ModelKind::Sr
            | crate::ModelKind::Blend => Inner::Graph(ItemGraph {
                w: csr("graph", Some(n), n, true)?,
            }),
            crate::ModelKind::Vsknn => {
                spec.session
                    .validate()
                    .map_err(|e| bad(format!("session spec: {e}")))?;
                Inner::Vsknn(Vsknn::from_sessions(
                    csr("vsknn", None, n, false)?,
                    n,
                    spec.session,
                ))
            }
            crate::ModelKind::Ease => {
                let active = u32s("ease.active")?;
                let m = active.len();
                if active.iter().any(|&i| i as usize >= n) {
                    return Err(bad("EASE shapes do not match".into()));
                }
                let weights = if st.names().contains(&"ease.b") {
                    let (sb, b) = f32s("ease.b")?;
                    if sb != [m, m] {
                        return Err(bad("EASE shapes do not match".into()));
                    }
                    Weights::Dense(b)
                } else {
                    Weights::Sparse(csr("ease", Some(m), m, true)?)
                };
                let mut position = vec![INACTIVE; n];
                for (p, &i) in active.iter().enumerate() {
                    position[i as usize] = p as u32;
                }
                Inner::Ease(Ease {
                    items: items.clone(),
                    active,
                    position,
                    weights,
                    config: spec.ease,
                    signal: spec.signal,
                })
            }
        };
        Ok(Model {
            spec,
            popular,
            inner,
            reference_ts,
        })
    }
}

/// The same safetensors file with its header's keys in sorted order.
/// `safetensors` writes the metadata from a `HashMap`, in an order that
/// changes from process to process; sorted, the same model is the same bytes
/// (a model trained twice on the same data, or on a copied store, compares
/// equal by checksum). The header keeps its length, so the data's offsets hold.
fn canonical_header(mut bytes: Vec<u8>) -> Vec<u8> {
    use std::collections::BTreeMap;
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return bytes;
    };
    let Ok(mut parsed) = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(header)
    else {
        return bytes;
    };
    if let Some(meta) = parsed.get_mut("__metadata__") {
        if let Ok(sorted) = serde_json::from_value::<BTreeMap<String, String>>(meta.clone()) {
            *meta = serde_json::to_value(sorted).expect("strings serialise");
        }
    }
    let Ok(mut sorted) = serde_json::to_vec(&parsed) else {
        return bytes;
    };
    if sorted.len() > len {
        return bytes;
    }
    sorted.resize(len, b' ');
    bytes[8..8 + len].copy_from_slice(&sorted);
    bytes
}
