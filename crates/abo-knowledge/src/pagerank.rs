//! Personalised PageRank over a weighted directed graph: the walk restarts at the task's seeds,
//! so rank flows from what the task is about to what that code uses and what uses it.

use std::collections::BTreeMap;

const DAMPING: f64 = 0.85;
const ROUNDS: usize = 40;

/// Ranks of the nodes `0..n` of `edges` (from, to, weight), restarting in proportion to
/// `seeds`; the ranks sum to 1. A node without out-edges gives its rank back to the seeds.
pub fn personalised(n: usize, edges: &[(usize, usize, f64)], seeds: &[f64]) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    let total: f64 = seeds.iter().take(n).filter(|s| **s > 0.0).sum();
    let restart: Vec<f64> = if total > 0.0 {
        (0..n)
            .map(|i| seeds.get(i).copied().unwrap_or(0.0).max(0.0) / total)
            .collect()
    } else {
        vec![1.0 / n as f64; n]
    };
    let mut out_weight = vec![0.0; n];
    let mut by_target: BTreeMap<usize, Vec<(usize, f64)>> = BTreeMap::new();
    for &(a, b, w) in edges {
        if a < n && b < n && a != b && w > 0.0 {
            out_weight[a] += w;
            by_target.entry(b).or_default().push((a, w));
        }
    }
    let mut rank = restart.clone();
    for _ in 0..ROUNDS {
        let dangling: f64 = (0..n)
            .filter(|&i| out_weight[i] == 0.0)
            .map(|i| rank[i])
            .sum();
        let mut next: Vec<f64> = restart
            .iter()
            .map(|r| (1.0 - DAMPING) * r + DAMPING * dangling * r)
            .collect();
        for (&b, ins) in &by_target {
            let flow: f64 = ins.iter().map(|&(a, w)| rank[a] * w / out_weight[a]).sum();
            next[b] += DAMPING * flow;
        }
        rank = next;
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_flows_from_the_seed_along_edges() {
        // 0 -> 1 -> 2, 3 alone; the walk restarts at 0.
        let r = personalised(4, &[(0, 1, 1.0), (1, 2, 1.0)], &[1.0, 0.0, 0.0, 0.0]);
        assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{r:?}");
        assert!(r[0] > r[1] && r[1] > r[2] && r[2] > r[3], "{r:?}");
        assert_eq!(r[3], 0.0);
        // No seeds: uniform restart.
        let u = personalised(2, &[], &[0.0, 0.0]);
        assert!((u[0] - u[1]).abs() < 1e-12);
    }
}
