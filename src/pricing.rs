//! Model prices (USD per 1M tokens) and the cost of a request.
//!
//! The shipped table `conf/prices.yaml` is compiled in; the config's `pricing:` section
//! overrides or extends it per model.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use switchyard_filters::Usage;

use crate::config::raw::RawPrice;
use crate::config::Problem;

const SHIPPED: &str = include_str!("../conf/prices.yaml");

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

#[derive(Debug, Default)]
pub struct PriceTable {
    prices: HashMap<Arc<str>, Price>,
}

impl PriceTable {
    pub fn with_overrides(
        overrides: &BTreeMap<String, RawPrice>,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let shipped: BTreeMap<String, RawPrice> = serde_yaml::from_str(SHIPPED)
            .expect("conf/prices.yaml is valid (checked by a unit test)");
        let mut prices = HashMap::new();
        for (model, p) in shipped.iter().chain(overrides) {
            prices.insert(
                Arc::from(model.as_str()),
                Price {
                    input_per_million: p.input,
                    output_per_million: p.output,
                },
            );
        }
        for (model, p) in overrides {
            if !(p.input.is_finite() && p.output.is_finite() && p.input >= 0.0 && p.output >= 0.0) {
                problems.push(Problem::new(
                    format!("pricing.{model}"),
                    "prices must be non-negative numbers",
                ));
            }
        }
        PriceTable { prices }
    }

    /// The price of the first of `models` that has one (upstream name first, then the client's).
    pub fn price(&self, models: &[&str]) -> Option<Price> {
        models.iter().find_map(|m| self.prices.get(*m).copied())
    }

    /// The table's own copy of `model`'s name when it has a price: a name from configuration,
    /// so it may serve as a metric label.
    pub fn known_name(&self, model: &str) -> Option<&Arc<str>> {
        self.prices.get_key_value(model).map(|(k, _)| k)
    }

    /// Cost in USD of `usage` on the first priced model of `models`; 0 when none is priced.
    pub fn cost(&self, models: &[&str], usage: &Usage) -> f64 {
        self.price(models).map_or(0.0, |p| {
            (usage.prompt_tokens as f64 * p.input_per_million
                + usage.completion_tokens as f64 * p.output_per_million)
                / 1_000_000.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_parses_and_overrides_win() {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "gpt-4o".to_string(),
            RawPrice {
                input: 1.0,
                output: 2.0,
            },
        );
        let mut problems = Vec::new();
        let t = PriceTable::with_overrides(&overrides, &mut problems);
        assert!(problems.is_empty());
        assert!(t.price(&["gpt-4o-mini"]).is_some());
        let cost = t.cost(&["gpt-4o"], &Usage::new(1_000_000, 500_000));
        assert!((cost - 2.0).abs() < 1e-9);
        assert_eq!(t.cost(&["unpriced"], &Usage::new(10, 10)), 0.0);
    }
}
