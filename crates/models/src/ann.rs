//! Retrieval that does not score every item: an inverted-file (IVF) index over
//! the item vectors of the factor models (ALS item factors, two-tower
//! candidate vectors), for maximum-inner-product search.
//!
//! Items are clustered by k-means (seeded, so the same model gives the same
//! index); each list keeps its members' vectors contiguous, and its radius (the
//! largest distance of a member to the centroid). For a query `q`, every item
//! `v` of list `l` scores at most `q·c_l + |q|·r_l` (Cauchy–Schwarz), so lists
//! are visited in the order of that upper bound and the search stops as soon
//! as the `k`-th best score found beats the next list's bound: that answer is
//! *exact*, whatever filters the caller applies. A probe budget trades the
//! last bit of recall for a hard ceiling on the work.
//!
//! The index holds item indices only; the caller scores each list's block with
//! the same kernel it uses for exact scoring, so a score found through the index
//! is bit for bit the score exact scoring gives.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::linalg::{dot, matvec};

/// Below this many items exact scoring is as cheap as probing: no index.
pub const MIN_ITEMS: usize = 4096;

/// An IVF index over `n` vectors of `dim` floats.
#[derive(Debug, Clone)]
pub struct IvfIndex {
    dim: usize,
    centroids: Vec<f32>,
    centroid_norms: Vec<f32>,
    radii: Vec<f32>,
    /// `offsets[l]..offsets[l + 1]` are list `l`'s slots.
    offsets: Vec<usize>,
    /// The item index in each slot.
    ids: Vec<u32>,
    /// The item vectors in slot order.
    vectors: Vec<f32>,
}

/// One list to visit, with the most any of its items can score.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// The list.
    pub list: u32,
    /// An upper bound on `q·v` over the list's items.
    pub bound: f32,
}

/// The visiting order: a higher bound first, then the lower list (a total
/// order, so the search is deterministic).
impl Ord for Probe {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bound
            .total_cmp(&other.bound)
            .then(other.list.cmp(&self.list))
    }
}

impl PartialOrd for Probe {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Probe {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Probe {}

impl IvfIndex {
    /// Clusters `vectors` (`n × dim`, row-major) into about `4·√n` lists with
    /// `iterations` rounds of k-means from a seeded sample of the items.
    pub fn build(vectors: &[f32], dim: usize, seed: u64) -> Self {
        assert!(
            dim > 0 && vectors.len().is_multiple_of(dim),
            "ragged vectors"
        );
        let n = vectors.len() / dim;
        let lists = ((4.0 * (n as f64).sqrt()) as usize).clamp(1, n.max(1));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Initial centroids: distinct items drawn at random (partial Fisher–Yates).
        let mut order: Vec<usize> = (0..n).collect();
        for i in 0..lists {
            let j = rng.random_range(i..n);
            order.swap(i, j);
        }
        let mut centroids: Vec<f32> = order[..lists]
            .iter()
            .flat_map(|&i| vectors[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        let mut assign = vec![0u32; n];
        for _ in 0..12 {
            assign_all(vectors, &centroids, dim, &mut assign);
            let moved = update_centroids(vectors, &assign, dim, &mut centroids);
            if !moved {
                break;
            }
        }
        assign_all(vectors, &centroids, dim, &mut assign);

        let mut offsets = vec![0usize; lists + 1];
        for &a in &assign {
            offsets[a as usize + 1] += 1;
        }
        for l in 0..lists {
            offsets[l + 1] += offsets[l];
        }
        let mut next = offsets.clone();
        let mut ids = vec![0u32; n];
        for (i, &a) in assign.iter().enumerate() {
            ids[next[a as usize]] = i as u32;
            next[a as usize] += 1;
        }
        let vectors_by_slot: Vec<f32> = ids
            .iter()
            .flat_map(|&i| {
                vectors[i as usize * dim..(i as usize + 1) * dim]
                    .iter()
                    .copied()
            })
            .collect();
        let radii = (0..lists)
            .map(|l| {
                let c = &centroids[l * dim..(l + 1) * dim];
                vectors_by_slot[offsets[l] * dim..offsets[l + 1] * dim]
                    .chunks_exact(dim)
                    .map(|v| distance2(v, c))
                    .fold(0f32, f32::max)
                    .sqrt()
                    // Rounding in the bound's arithmetic must never cut an item off.
                    * (1.0 + 1e-4)
                    + 1e-6
            })
            .collect();
        let centroid_norms = centroids
            .chunks_exact(dim)
            .map(|c| dot::<false>(c, c).sqrt())
            .collect();
        IvfIndex {
            dim,
            centroids,
            centroid_norms,
            radii,
            offsets,
            ids,
            vectors: vectors_by_slot,
        }
    }

    /// How many lists.
    pub fn lists(&self) -> usize {
        self.radii.len()
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index holds no item.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Every list in the order to visit for `query`: the highest bound first
    /// (of equal bounds, the lower list). Lazily: a search stops after a few
    /// of the hundreds of lists, so they are heaped, not sorted (sorting them
    /// was 6 % of a busy server's time).
    pub fn probes(&self, query: &[f32]) -> impl Iterator<Item = Probe> {
        let norm = dot::<false>(query, query).sqrt();
        let probes: Vec<Probe> = self
            .centroids
            .chunks_exact(self.dim)
            .zip(self.radii.iter().zip(&self.centroid_norms))
            .enumerate()
            .map(|(l, (c, (&r, &cn)))| Probe {
                list: l as u32,
                // The last term covers the rounding of two differently summed
                // dot products (the bound's and the caller's kernel).
                bound: dot::<false>(query, c) + norm * r + 1e-5 * norm * (cn + r),
            })
            .collect();
        let mut heap = BinaryHeap::from(probes);
        std::iter::from_fn(move || heap.pop())
    }

    /// List `list`'s item indices and their vectors (`ids.len() × dim`).
    pub fn list(&self, list: u32) -> (&[u32], &[f32]) {
        let (a, b) = (self.offsets[list as usize], self.offsets[list as usize + 1]);
        (&self.ids[a..b], &self.vectors[a * self.dim..b * self.dim])
    }
}

fn distance2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Each vector's nearest centroid (ties to the lower list).
fn assign_all(vectors: &[f32], centroids: &[f32], dim: usize, assign: &mut [u32]) {
    // |v - c|² = |v|² - 2 v·c + |c|²: rank by |c|² - 2 v·c.
    let norms: Vec<f32> = centroids
        .chunks_exact(dim)
        .map(|c| dot::<false>(c, c))
        .collect();
    assign
        .par_iter_mut()
        .zip(vectors.par_chunks_exact(dim))
        .for_each_init(
            || vec![0f32; norms.len()],
            |products, (a, v)| {
                matvec(centroids, v, dim, products);
                let mut best = (f32::INFINITY, 0u32);
                for (l, (&p, &cn)) in products.iter().zip(&norms).enumerate() {
                    let d = cn - 2.0 * p;
                    if d < best.0 {
                        best = (d, l as u32);
                    }
                }
                *a = best.1;
            },
        );
}

/// Moves each centroid to its members' mean (an empty list keeps its place).
/// Returns whether any centroid moved.
fn update_centroids(vectors: &[f32], assign: &[u32], dim: usize, centroids: &mut [f32]) -> bool {
    let lists = centroids.len() / dim;
    let mut sums = vec![0f64; lists * dim];
    let mut counts = vec![0usize; lists];
    for (v, &a) in vectors.chunks_exact(dim).zip(assign) {
        counts[a as usize] += 1;
        for (s, &x) in sums[a as usize * dim..(a as usize + 1) * dim]
            .iter_mut()
            .zip(v)
        {
            *s += f64::from(x);
        }
    }
    let mut moved = false;
    for l in 0..lists {
        if counts[l] == 0 {
            continue;
        }
        for (c, s) in centroids[l * dim..(l + 1) * dim]
            .iter_mut()
            .zip(&sums[l * dim..(l + 1) * dim])
        {
            let next = (*s / counts[l] as f64) as f32;
            moved |= next != *c;
            *c = next;
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Clustered like trained factors: a few directions plus noise, varied norms.
        let centres: Vec<f32> = (0..16 * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        (0..n)
            .flat_map(|_| {
                let c = rng.random_range(0..16);
                let scale = rng.random_range(0.2f32..1.5);
                (0..dim)
                    .map(|d| scale * (centres[c * dim + d] + 0.4 * rng.random_range(-1.0f32..1.0)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn lists_come_by_bound_and_ties_go_to_the_lower_list() {
        // Lists 0, 1 and 3 have the same centroid and radius: equal bounds.
        let centroids = vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.5];
        let index = IvfIndex {
            dim: 2,
            centroid_norms: centroids
                .chunks_exact(2)
                .map(|c| dot::<false>(c, c))
                .collect(),
            centroids,
            radii: vec![0.1, 0.1, 0.3, 0.1, 0.0],
            offsets: vec![0; 6],
            ids: vec![],
            vectors: vec![],
        };
        let order: Vec<u32> = index.probes(&[2.0, 1.0]).map(|p| p.list).collect();
        assert_eq!(order, [0, 1, 3, 2, 4]);
        let bounds: Vec<f32> = index.probes(&[2.0, 1.0]).map(|p| p.bound).collect();
        assert!(bounds.windows(2).all(|w| w[0] >= w[1]), "{bounds:?}");
    }

    fn exact_top(vectors: &[f32], dim: usize, q: &[f32], k: usize) -> Vec<u32> {
        let mut s: Vec<(f32, u32)> = vectors
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| (dot::<false>(v, q), i as u32))
            .collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        s.into_iter().take(k).map(|x| x.1).collect()
    }

    /// The index's search, as a caller runs it: visit by bound, stop when the
    /// k-th best beats the next bound.
    fn search(index: &IvfIndex, q: &[f32], k: usize) -> (Vec<u32>, usize) {
        let mut best: Vec<(f32, u32)> = Vec::new();
        let mut visited = 0;
        for p in index.probes(q) {
            if best.len() == k && best[k - 1].0 > p.bound {
                break;
            }
            let (ids, vecs) = index.list(p.list);
            visited += ids.len();
            for (&i, v) in ids.iter().zip(vecs.chunks_exact(index.dim)) {
                best.push((dot::<false>(v, q), i));
            }
            best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            best.truncate(k);
        }
        (best.into_iter().map(|x| x.1).collect(), visited)
    }

    #[test]
    fn every_item_is_in_exactly_one_list_and_the_build_is_seeded() {
        let dim = 8;
        let v = random_vectors(3000, dim, 1);
        let index = IvfIndex::build(&v, dim, 7);
        let mut ids = index.ids.clone();
        ids.sort_unstable();
        assert_eq!(ids, (0..3000).collect::<Vec<u32>>());
        assert_eq!(index.lists(), (4.0 * 3000f64.sqrt()) as usize);
        let again = IvfIndex::build(&v, dim, 7);
        assert_eq!(index.ids, again.ids);
        assert_eq!(index.centroids, again.centroids);
    }

    #[test]
    fn bounded_search_is_exact_and_skips_most_items() {
        let dim = 16;
        let n = 20_000;
        let v = random_vectors(n, dim, 2);
        let index = IvfIndex::build(&v, dim, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut visited = 0;
        for _ in 0..50 {
            let q: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let (got, seen) = search(&index, &q, 10);
            assert_eq!(got, exact_top(&v, dim, &q, 10));
            visited += seen;
        }
        assert!(
            visited < 50 * n / 2,
            "the bounds pruned too little: {visited} of {}",
            50 * n
        );
    }
}
