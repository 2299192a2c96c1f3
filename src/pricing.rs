//! Model prices (USD per 1M tokens) and the cost of a request.
//!
//! The shipped table `conf/prices.yaml` is compiled in; the config's `pricing:` section
//! overrides or extends it per model. A model's price is, in this order:
//! 1. its own entry;
//! 2. for a dated snapshot (`gpt-4o-2024-11-20`, `claude-3-7-sonnet-20250219`,
//!    `claude-3-5-sonnet@20240620`: a date at the end as `-YYYY-MM-DD`, `-YYYYMMDD` or
//!    `@YYYYMMDD`), the entry of the name without the date (`gpt-4o`);
//! 3. the longest `pricing:` pattern ending in `*` that the name starts with
//!    (`"gpt-*": {input: 10, output: 30}`), a family's default.
//!
//! A model with none of these is unpriced: it costs 0, is counted in
//! `ai_proxy_unpriced_requests_total`, and is refused to keys and users with a budget
//! (see `crate::governance::gate`), which it would otherwise bypass.

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
    /// Prompt-cache reads (`usage.cached_tokens`); the input price when none is published.
    pub cache_read_per_million: f64,
    /// Prompt-cache writes (`usage.cache_write_tokens`); the input price when none is published.
    pub cache_write_per_million: f64,
    /// One-hour prompt-cache writes (`usage.cache_write_1h_tokens`, part of the writes); the
    /// write price when none is published.
    pub cache_write_1h_per_million: f64,
}

impl Price {
    /// Cost in USD of `usage` at this price: cache reads and writes (parts of the prompt)
    /// at their own prices, the rest of the prompt at the input price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
        let written_1h = usage.cache_write_1h_tokens.min(written);
        let plain = usage.prompt_tokens - cached - written;
        (plain as f64 * self.input_per_million
            + cached as f64 * self.cache_read_per_million
            + (written - written_1h) as f64 * self.cache_write_per_million
            + written_1h as f64 * self.cache_write_1h_per_million
            + usage.completion_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

#[derive(Debug, Default)]
pub struct PriceTable {
    prices: HashMap<Arc<str>, Price>,
    /// `pricing:` keys ending in `*`: (prefix, price), longest prefix first.
    families: Vec<(String, Price)>,
}

impl PriceTable {
    pub fn with_overrides(
        overrides: &BTreeMap<String, RawPrice>,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let shipped: BTreeMap<String, RawPrice> = serde_yaml::from_str(SHIPPED)
            .expect("conf/prices.yaml is valid (checked by a unit test)");
        let mut prices = HashMap::new();
        let mut families = Vec::new();
        for (model, p) in shipped.iter().chain(overrides) {
            let price = Price {
                input_per_million: p.input,
                output_per_million: p.output,
                cache_read_per_million: p.cache_read.unwrap_or(p.input),
                cache_write_per_million: p.cache_write.unwrap_or(p.input),
                cache_write_1h_per_million: p.cache_write_1h.or(p.cache_write).unwrap_or(p.input),
            };
            match model.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') => families.push((prefix.to_owned(), price)),
                Some(_) => problems.push(Problem::new(
                    format!("pricing.{model}"),
                    "a family price has one `*`, at the end (e.g. `gpt-4o-*`)",
                )),
                None => {
                    prices.insert(Arc::from(model.as_str()), price);
                }
            }
        }
        families.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        for (model, p) in overrides {
            let ok = |x: f64| x.is_finite() && x >= 0.0;
            if !(ok(p.input)
                && ok(p.output)
                && p.cache_read.is_none_or(ok)
                && p.cache_write.is_none_or(ok)
                && p.cache_write_1h.is_none_or(ok))
            {
                problems.push(Problem::new(
                    format!("pricing.{model}"),
                    "prices must be non-negative numbers",
                ));
            }
        }
        PriceTable { prices, families }
    }

    /// The price of the first of `models` that has one (upstream name first, then the
    /// client's), by the rules in the module's doc.
    pub fn price(&self, models: &[&str]) -> Option<Price> {
        models.iter().find_map(|m| self.lookup(m))
    }

    fn lookup(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        if let Some(p) = undated(model).and_then(|m| self.prices.get(m)) {
            return Some(*p);
        }
        self.families
            .iter()
            .find(|(prefix, _)| model.starts_with(prefix.as_str()))
            .map(|(_, p)| *p)
    }

    /// The table's own copy of `model`'s name when it has a price: a name from configuration,
    /// so it may serve as a metric label.
    pub fn known_name(&self, model: &str) -> Option<&Arc<str>> {
        self.prices.get_key_value(model).map(|(k, _)| k)
    }

    /// Cost in USD of `usage` on the first priced model of `models`; 0 when none is priced.
    pub fn cost(&self, models: &[&str], usage: &Usage) -> f64 {
        self.price(models).map_or(0.0, |p| p.cost(usage))
    }
}

/// The name without a snapshot date at its end (`-YYYY-MM-DD`, `-YYYYMMDD`, `@YYYYMMDD`).
fn undated(model: &str) -> Option<&str> {
    let b = model.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let n = b.len();
    if n > 11 && b[n - 11] == b'-' && b[n - 6] == b'-' && b[n - 3] == b'-' {
        let (y, m, d) = (&b[n - 10..n - 6], &b[n - 5..n - 3], &b[n - 2..]);
        if digits(y) && digits(m) && digits(d) {
            return Some(&model[..n - 11]);
        }
    }
    if n > 9 && matches!(b[n - 9], b'-' | b'@') && digits(&b[n - 8..]) {
        return Some(&model[..n - 9]);
    }
    None
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
                cache_read: None,
                cache_write: None,
                cache_write_1h: None,
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

    #[test]
    fn cache_reads_and_writes_have_their_own_prices() {
        let t = PriceTable::with_overrides(&BTreeMap::new(), &mut Vec::new());
        // claude-3-5-haiku: input 0.80, cache write 1.00, cache read 0.08, output 4.00.
        let mut u = Usage::new(1_000_000 + 2_000_000 + 3_000_000, 1_000_000);
        u.cached_tokens = 2_000_000;
        u.cache_write_tokens = 3_000_000;
        let cost = t.cost(&["claude-3-5-haiku-20241022"], &u);
        assert!(
            (cost - (0.80 + 2.0 * 0.08 + 3.0 * 1.00 + 4.00)).abs() < 1e-9,
            "{cost}"
        );
        // OpenAI: cached input at its discounted price; no cache-write price (input price).
        let mut u = Usage::new(1_000_000, 0);
        u.cached_tokens = 1_000_000;
        assert!((t.cost(&["gpt-4o"], &u) - 1.25).abs() < 1e-9);
        // Counts the provider got wrong (more cached than prompt) never go negative.
        let mut u = Usage::new(10, 0);
        u.cached_tokens = 20;
        u.cache_write_tokens = 20;
        assert!(t.cost(&["gpt-4o"], &u) >= 0.0);
    }

    /// A cached request: 10k prompt tokens of which 8k read from the cache and 1k written to
    /// it, 500 output tokens; the expected cost from the provider's published multipliers.
    fn cached_request() -> Usage {
        let mut u = Usage::new(10_000, 500);
        u.cached_tokens = 8_000;
        u.cache_write_tokens = 1_000;
        u
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn anthropic_cached_request_costs_its_published_multipliers() {
        // Anthropic: 5-minute cache writes cost 1.25x the input price, reads 0.1x.
        let t = PriceTable::with_overrides(&BTreeMap::new(), &mut Vec::new());
        let input = 3.00 / 1e6;
        let expected =
            1_000.0 * input + 8_000.0 * 0.1 * input + 1_000.0 * 1.25 * input + 500.0 * 15.00 / 1e6;
        let cost = t.cost(&["claude-sonnet-4-20250514"], &cached_request());
        assert!(close(cost, expected), "{cost} vs {expected}");
    }

    #[test]
    fn anthropic_one_hour_cache_writes_cost_twice_the_input_price() {
        // Anthropic: a one-hour write costs 2x the input price, a five-minute one 1.25x; a
        // request may write both (usage.cache_creation.ephemeral_1h_input_tokens).
        let t = PriceTable::with_overrides(&BTreeMap::new(), &mut Vec::new());
        let input = 3.00 / 1e6;
        let mut u = cached_request();
        u.cache_write_1h_tokens = 400;
        let expected = 1_000.0 * input
            + 8_000.0 * 0.1 * input
            + 600.0 * 1.25 * input
            + 400.0 * 2.0 * input
            + 500.0 * 15.00 / 1e6;
        let cost = t.cost(&["claude-sonnet-4-20250514"], &u);
        assert!(close(cost, expected), "{cost} vs {expected}");
        // Without a published one-hour price, one-hour writes cost the write price.
        let p = t
            .price(&["anthropic.claude-sonnet-4-20250514-v1:0"])
            .unwrap();
        assert!(close(
            p.cache_write_1h_per_million,
            p.cache_write_per_million
        ));
    }

    #[test]
    fn bedrock_claude_cached_request_costs_as_on_anthropic() {
        let t = PriceTable::with_overrides(&BTreeMap::new(), &mut Vec::new());
        for (bedrock, anthropic) in [
            (
                "anthropic.claude-3-7-sonnet-20250219-v1:0",
                "claude-3-7-sonnet-20250219",
            ),
            (
                "anthropic.claude-3-5-haiku-20241022-v1:0",
                "claude-3-5-haiku-20241022",
            ),
        ] {
            let p = t.price(&[bedrock]).unwrap();
            assert!(close(p.cache_write_per_million, 1.25 * p.input_per_million));
            assert!(close(p.cache_read_per_million, 0.1 * p.input_per_million));
            let (b, a) = (
                t.cost(&[bedrock], &cached_request()),
                t.cost(&[anthropic], &cached_request()),
            );
            assert!(close(b, a), "{bedrock}: {b} vs {a}");
        }
    }

    #[test]
    fn openai_cached_request_costs_its_published_discount() {
        // OpenAI: cached input at 50 % (gpt-4o, gpt-4o-mini, o1) or 25 % (gpt-4.1 family) of
        // the input price; no cache-write charge (writes cost the input price).
        let t = PriceTable::with_overrides(&BTreeMap::new(), &mut Vec::new());
        let mut u = Usage::new(10_000, 500);
        u.cached_tokens = 8_000;
        for (model, input, output, share) in [
            ("gpt-4o", 2.50, 10.00, 0.5),
            ("gpt-4o-mini", 0.15, 0.60, 0.5),
            ("gpt-4.1", 2.00, 8.00, 0.25),
            ("gpt-4.1-mini", 0.40, 1.60, 0.25),
        ] {
            let expected = (2_000.0 * input + 8_000.0 * share * input + 500.0 * output) / 1e6;
            let cost = t.cost(&[model], &u);
            assert!(close(cost, expected), "{model}: {cost} vs {expected}");
        }
    }

    #[test]
    fn snapshots_and_families_take_their_base_price() {
        let mut overrides = BTreeMap::new();
        let price = |input| RawPrice {
            input,
            output: 0.0,
            cache_read: None,
            cache_write: None,
            cache_write_1h: None,
        };
        overrides.insert("claude-3-7-sonnet".to_string(), price(3.0));
        overrides.insert("gpt-*".to_string(), price(50.0));
        overrides.insert("gpt-5-*".to_string(), price(7.0));
        let mut problems = Vec::new();
        let t = PriceTable::with_overrides(&overrides, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let input = |m: &str| t.price(&[m]).map(|p| p.input_per_million);
        assert_eq!(input("gpt-4o-2024-11-20"), Some(2.5));
        assert_eq!(input("claude-3-7-sonnet-20250219"), Some(3.0));
        assert_eq!(input("claude-3-7-sonnet@20250219"), Some(3.0));
        // Longest family prefix wins; a name with no price of its own falls to its family.
        assert_eq!(input("gpt-5-mini"), Some(7.0));
        assert_eq!(input("gpt-new"), Some(50.0));
        assert_eq!(input("gpt-4o"), Some(2.5));
        assert_eq!(input("llama-3-70b"), None);
        assert_eq!(undated("gpt-4o-2024-13"), None);
        assert_eq!(undated("x-12345678"), Some("x"));
        let mut bad = BTreeMap::new();
        bad.insert("g*t-*".to_string(), price(1.0));
        let mut problems = Vec::new();
        PriceTable::with_overrides(&bad, &mut problems);
        assert_eq!(problems[0].path, "pricing.g*t-*");
    }
}
