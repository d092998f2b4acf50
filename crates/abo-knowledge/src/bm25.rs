//! Okapi BM25 over term frequencies kept in the store: the same arithmetic for files, commits and
//! past tasks.

/// k1 and b as Lucene sets them.
const K1: f64 = 1.2;
const B: f64 = 0.75;

/// A collection's size, for scoring one term in one document.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Collection {
    /// Documents in it.
    pub docs: u64,
    /// Their mean length in terms.
    pub avg_len: f64,
}

impl Collection {
    pub fn new(docs: u64, total_len: u64) -> Self {
        let avg_len = if docs == 0 {
            1.0
        } else {
            (total_len as f64 / docs as f64).max(1.0)
        };
        Self { docs, avg_len }
    }

    /// The inverse document frequency of a term found in `df` documents (never negative).
    pub fn idf(&self, df: u64) -> f64 {
        let n = self.docs as f64;
        let df = df as f64;
        ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
    }

    /// One term's contribution to a document of `len` terms holding it `tf` times.
    pub fn score(&self, tf: u32, len: u64, df: u64) -> f64 {
        let tf = f64::from(tf);
        let norm = K1 * (1.0 - B + B * len as f64 / self.avg_len);
        self.idf(df) * tf * (K1 + 1.0) / (tf + norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarer_terms_and_shorter_documents_score_higher() {
        let c = Collection::new(100, 10_000);
        assert!(c.idf(1) > c.idf(50));
        assert!(c.idf(100) > 0.0);
        assert!(c.score(3, 50, 5) > c.score(3, 500, 5));
        assert!(c.score(3, 100, 5) > c.score(1, 100, 5));
        // Saturation: ten times the occurrences is far less than ten times the score.
        assert!(c.score(30, 100, 5) < 3.0 * c.score(3, 100, 5));
        assert_eq!(Collection::new(0, 0).avg_len, 1.0);
    }
}
