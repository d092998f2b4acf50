//! Prices in USD per million tokens: a built-in table for current models, overridden by `pricing:`
//! in abo.yml. A cost computed here is `estimated`; one a provider reports is `reported`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Usage;

/// USD per million tokens. Cache prices default to the input price when unknown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_read: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

/// input, output, cache read, cache write.
type Rates = (f64, f64, f64, f64);

const fn p(input: f64, output: f64, cache_read: f64, cache_write: f64) -> Rates {
    (input, output, cache_read, cache_write)
}

/// Model name prefixes and their prices, as the providers list them.
const BUILTIN: &[(&str, Rates)] = &[
    ("claude-opus-4-5", p(5.0, 25.0, 0.5, 6.25)),
    ("claude-opus-4-1", p(15.0, 75.0, 1.5, 18.75)),
    ("claude-opus-4", p(15.0, 75.0, 1.5, 18.75)),
    ("claude-sonnet-4-5", p(3.0, 15.0, 0.3, 3.75)),
    ("claude-sonnet-4", p(3.0, 15.0, 0.3, 3.75)),
    ("claude-3-7-sonnet", p(3.0, 15.0, 0.3, 3.75)),
    ("claude-haiku-4-5", p(1.0, 5.0, 0.1, 1.25)),
    ("claude-3-5-haiku", p(0.8, 4.0, 0.08, 1.0)),
    ("gpt-5-codex", p(1.25, 10.0, 0.125, 1.25)),
    ("gpt-5-mini", p(0.25, 2.0, 0.025, 0.25)),
    ("gpt-5-nano", p(0.05, 0.4, 0.005, 0.05)),
    ("gpt-5", p(1.25, 10.0, 0.125, 1.25)),
    ("gpt-4.1-mini", p(0.4, 1.6, 0.1, 0.4)),
    ("gpt-4.1-nano", p(0.1, 0.4, 0.025, 0.1)),
    ("gpt-4.1", p(2.0, 8.0, 0.5, 2.0)),
    ("gpt-4o-mini", p(0.15, 0.6, 0.075, 0.15)),
    ("gpt-4o", p(2.5, 10.0, 1.25, 2.5)),
    ("o4-mini", p(1.1, 4.4, 0.275, 1.1)),
    ("o3", p(2.0, 8.0, 0.5, 2.0)),
];

/// The prices a run uses, frozen at its creation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable(pub BTreeMap<String, Price>);

impl PriceTable {
    /// The built-in table with `overrides` (abo.yml `pricing:`) on top.
    pub fn with_overrides(overrides: &BTreeMap<String, Price>) -> Self {
        let mut t: BTreeMap<String, Price> = BUILTIN
            .iter()
            .map(|(m, (i, o, r, w))| {
                (
                    (*m).to_owned(),
                    Price {
                        input: *i,
                        output: *o,
                        cache_read: Some(*r),
                        cache_write: Some(*w),
                    },
                )
            })
            .collect();
        t.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self(t)
    }

    /// The price of a model: an exact entry, else the longest entry its name starts with
    /// (`claude-sonnet-4-5-20250929` is `claude-sonnet-4-5`). A provider prefix (`openai/`) is ignored.
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        let m = model.rsplit('/').next().unwrap_or(model);
        self.0.get(m).or_else(|| {
            self.0
                .iter()
                .filter(|(k, _)| {
                    m.starts_with(k.as_str()) && m[k.len()..].starts_with(['-', '.', '@', ':'])
                })
                .max_by_key(|(k, _)| k.len())
                .map(|(_, p)| p)
        })
    }

    /// The estimated cost of `usage` on `model`; `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        let p = self.lookup(model)?;
        let per = |tokens: u64, price: f64| tokens as f64 * price / 1_000_000.0;
        Some(
            per(usage.input_tokens, p.input)
                + per(usage.output_tokens, p.output)
                + per(usage.cache_read_tokens, p.cache_read.unwrap_or(p.input))
                + per(usage.cache_write_tokens, p.cache_write.unwrap_or(p.input)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_cost() {
        let t = PriceTable::with_overrides(&BTreeMap::from([(
            "qwen2.5-coder".to_owned(),
            Price {
                input: 0.0,
                output: 0.0,
                cache_read: None,
                cache_write: None,
            },
        )]));
        let check = |model: &str, want: Option<f64>| {
            let u = Usage {
                input_tokens: 1_000_000,
                output_tokens: 100_000,
                cache_read_tokens: 2_000_000,
                cache_write_tokens: 0,
                unsplit_tokens: 0,
            };
            let got = t.cost(model, &u).map(|c| (c * 1e6).round() / 1e6);
            assert_eq!(got, want, "{model}");
        };
        check("claude-sonnet-4-5-20250929", Some(3.0 + 1.5 + 0.6));
        check("claude-sonnet-4-20250514", Some(3.0 + 1.5 + 0.6));
        check("gpt-5-codex", Some(1.25 + 1.0 + 0.25));
        check("gpt-5", Some(1.25 + 1.0 + 0.25));
        check("gpt-5-mini-2025-08-07", Some(0.25 + 0.2 + 0.05));
        check("openai/gpt-4o-mini", Some(0.15 + 0.06 + 0.15));
        check("qwen2.5-coder:7b", Some(0.0));
        check("mystery-model", None);
        // A name that merely shares letters is not a match.
        check("gpt-5x", None);
    }
}
