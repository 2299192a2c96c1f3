//! The shipped operations files stay true to the gateway: every query of the Grafana dashboard
//! (conf/grafana/switchyard.json) and every alert rule (conf/prometheus/alerts.yml, and the
//! series of its promtool unit tests) names only metrics and labels that a running gateway
//! really exports, and the rules are complete. When `promtool` is installed, the rules also pass
//! `promtool check rules` and their unit tests (`promtool test rules`).
//!
//! The list of exported metrics is not copied from src/metrics.rs: a gateway is started and its
//! /metrics scraped after traffic that makes every family appear (labelled families are only
//! exposed once used).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use serde_json::{json, Value};
use support::*;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// One metric family as a gateway exposes it.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    /// Label names seen on its samples (`le` excluded).
    labels: BTreeSet<String>,
}

/// Parses the Prometheus text format into families (from `# HELP` / `# TYPE`) with the label
/// names of their samples.
fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*""#).unwrap();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            families.entry(name.to_owned()).or_default();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap_or_default();
            families.entry(name.to_owned()).or_default().kind =
                parts.next().unwrap_or_default().to_owned();
        } else if !line.is_empty() && !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let sample = &line[..end];
            let family = ["_bucket", "_sum", "_count", ""]
                .iter()
                .filter_map(|s| sample.strip_suffix(s))
                .find(|f| families.contains_key(*f))
                .unwrap_or_else(|| panic!("sample {sample} has no # HELP/# TYPE family"))
                .to_owned();
            if let (Some(open), Some(close)) = (line.find('{'), line.rfind('}')) {
                let f = families.get_mut(&family).unwrap();
                for c in label.captures_iter(&line[open + 1..close]) {
                    if &c[1] != "le" {
                        f.labels.insert(c[1].to_owned());
                    }
                }
            }
        }
    }
    families
}

/// Starts a gateway, sends the requests that make every metric family appear, and returns
/// the families of its /metrics.
async fn exported_families() -> BTreeMap<String, Family> {
    let up = MockUpstream::start(|_| {
        Reply::Full(
            200,
            vec![],
            chat_completion("gpt-4-0125-preview", "Hi!", 9, 3),
        )
    });
    let gw = gateway(&up.url(), "");
    let http = client();
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream,
               "messages": [{"role": "user", "content": "hello metrics"}]})
    };
    // requests, duration, tokens, cost (priced model), unified-API count, translation time.
    // A streamed mock answer: time to first token. A mock 503: provider errors.
    for (body, status) in [
        (chat("gpt-4", false), 200),
        (chat("mock-fast", true), 200),
        (chat("mock-error-503", false), 503),
    ] {
        let resp = http
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{body}");
        resp.bytes().await.unwrap();
    }
    let text = metrics_containing(
        &gw.metrics_url,
        &[
            "# HELP ai_proxy_requests_total",
            "# HELP ai_proxy_cost_usd_total",
            "# HELP ai_proxy_translation_duration_seconds",
            "# HELP ai_proxy_time_to_first_token_seconds",
            "# HELP ai_proxy_provider_errors_total",
            "# HELP ai_proxy_provider_up",
            "# HELP ai_proxy_in_flight_requests",
        ],
    )
    .await;
    let families = parse_exposition(&text);
    assert!(
        families.len() >= 10,
        "suspiciously few metric families: {families:?}"
    );
    families
}

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// Checks one PromQL expression against the exported families; returns the gateway metric
/// families it uses. Problems are pushed to `errors` prefixed with `whence`.
fn check_expr(
    whence: &str,
    expr: &str,
    families: &BTreeMap<String, Family>,
    errors: &mut Vec<String>,
) -> BTreeSet<String> {
    let metric = Regex::new(r"\b((?:ai_proxy|bedrock_proxy)_[a-z0-9_]+)").unwrap();
    let selector = Regex::new(r"\b((?:ai_proxy|bedrock_proxy)_[a-z0-9_]+)\s*\{([^}]*)\}").unwrap();
    let matcher = Regex::new(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)").unwrap();
    let grouping = Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    let quoted = Regex::new(r#""(?:[^"\\]|\\.)*""#).unwrap();
    let expr = quoted.replace_all(expr, "\"\"");

    // Resolves a name as written (maybe with a histogram suffix) to its family.
    let resolve = |name: &str, errors: &mut Vec<String>| -> Option<String> {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if families.get(base).is_some_and(|f| f.kind == "histogram") {
                    return Some(base.to_owned());
                }
            }
        }
        match families.get(name) {
            Some(f) if f.kind == "histogram" => {
                errors.push(format!(
                    "{whence}: `{name}` is a histogram: use {name}_bucket, _sum or _count"
                ));
                None
            }
            Some(_) => Some(name.to_owned()),
            None => {
                errors.push(format!(
                    "{whence}: `{name}` is not a metric the gateway exports (exported: {:?})",
                    families.keys().collect::<Vec<_>>()
                ));
                None
            }
        }
    };

    let mut used = BTreeSet::new();
    for m in metric.captures_iter(&expr) {
        if let Some(f) = resolve(&m[1], errors) {
            used.insert(f);
        }
    }
    for s in selector.captures_iter(&expr) {
        let Some(family) = families
            .keys()
            .find(|f| {
                ["", "_bucket", "_sum", "_count"]
                    .iter()
                    .any(|sfx| format!("{f}{sfx}") == s[1])
            })
            .cloned()
        else {
            continue; // already reported
        };
        for l in matcher.captures_iter(&s[2]) {
            let l = &l[1];
            let ok = families[&family].labels.contains(l)
                || TARGET_LABELS.contains(&l)
                || (l == "le" && s[1].ends_with("_bucket"));
            if !ok {
                errors.push(format!(
                    "{whence}: {} has no label `{l}` (it has {:?})",
                    &s[1], families[&family].labels
                ));
            }
        }
    }
    let known: BTreeSet<&str> = used
        .iter()
        .flat_map(|f| families[f].labels.iter().map(String::as_str))
        .chain(TARGET_LABELS)
        .chain(["le"])
        .collect();
    for g in grouping.captures_iter(&expr) {
        for l in g[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
            if !known.contains(l) {
                errors.push(format!(
                    "{whence}: groups by `{l}`, a label none of {used:?} has"
                ));
            }
        }
    }
    used
}

/// Label names a query's result can carry, for legends and annotations.
fn result_labels<'a>(
    used: &BTreeSet<String>,
    families: &'a BTreeMap<String, Family>,
) -> BTreeSet<&'a str> {
    used.iter()
        .flat_map(|f| families[f].labels.iter().map(String::as_str))
        .chain(TARGET_LABELS)
        .collect()
}

fn walk_panels<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        walk_panels(&p["panels"], out);
    }
}

#[tokio::test]
async fn dashboard_queries_name_exported_metrics() {
    let families = exported_families().await;
    let text = read("conf/grafana/switchyard.json");
    let dash: Value = serde_json::from_str(&text).expect("conf/grafana/switchyard.json parses");
    let mut errors = Vec::new();

    assert!(dash["title"].is_string() && dash["uid"].is_string());
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    let vars = dash["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "a DS_PROMETHEUS datasource variable"
    );
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        check_expr(
            &format!("variable {}", v["name"]),
            q,
            &families,
            &mut errors,
        );
    }

    let mut panels = Vec::new();
    walk_panels(&dash["panels"], &mut panels);
    let legend = Regex::new(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}").unwrap();
    let mut ids = BTreeSet::new();
    let mut all_used = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id in {title}"
        );
        assert!(p["gridPos"]["w"].is_u64(), "{title}: gridPos");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: datasource"
        );
        for t in targets {
            let whence = format!("panel {title:?} target {}", t["refId"]);
            assert_eq!(
                t["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{whence}: datasource"
            );
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{whence}: no expr"));
            let used = check_expr(&whence, expr, &families, &mut errors);
            if used.is_empty() {
                errors.push(format!("{whence}: names no gateway metric: {expr}"));
            }
            let labels = result_labels(&used, &families);
            for l in legend.captures_iter(t["legendFormat"].as_str().unwrap_or_default()) {
                if !labels.contains(&l[1]) {
                    errors.push(format!("{whence}: legend uses unknown label `{}`", &l[1]));
                }
            }
            all_used.extend(used);
            exprs.push(expr.to_owned());
        }
    }
    assert!(
        errors.is_empty(),
        "dashboard problems:\n{}",
        errors.join("\n")
    );

    // The design's panels are all there.
    for m in [
        "ai_proxy_requests_total",
        "ai_proxy_tokens_total",
        "ai_proxy_request_duration_seconds",
        "ai_proxy_time_to_first_token_seconds",
        "ai_proxy_provider_up",
        "ai_proxy_provider_errors_total",
        "ai_proxy_cost_usd_total",
        "ai_proxy_in_flight_requests",
    ] {
        assert!(all_used.contains(m), "no dashboard panel shows {m}");
    }
    assert!(
        exprs.iter().any(|e| e.contains("topk(")),
        "a most-used-models (topk) panel"
    );
    assert!(
        exprs.iter().any(|e| e.contains("histogram_quantile(0.99")),
        "a p99 latency panel"
    );
    println!(
        "dashboard: {} panels, {} queries, metrics used: {all_used:?}",
        panels.len(),
        exprs.len()
    );
}

#[tokio::test]
async fn alert_rules_are_complete_and_name_exported_metrics() {
    let families = exported_families().await;
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&read("conf/prometheus/alerts.yml")).expect("alerts.yml parses");
    let duration = Regex::new(r"^([0-9]+(ms|s|m|h|d|w|y))+$").unwrap();
    let annotation_label = Regex::new(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)").unwrap();
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();

    let groups = rules["groups"].as_sequence().expect("groups:");
    assert!(!groups.is_empty(), "no rule group");
    for g in groups {
        let group = g["name"].as_str().expect("group name");
        for r in g["rules"].as_sequence().expect("rules:") {
            let Some(alert) = r["alert"].as_str() else {
                errors.push(format!(
                    "group {group}: a rule without `alert` (recording rules are not expected here)"
                ));
                continue;
            };
            let whence = format!("alert {alert}");
            if !names.insert(alert.to_owned()) {
                errors.push(format!("{whence}: duplicate name"));
            }
            let expr = r["expr"].as_str().unwrap_or_default();
            if expr.trim().is_empty() {
                errors.push(format!("{whence}: no expr"));
            }
            match r["for"].as_str() {
                Some(f) if duration.is_match(f) => {}
                other => errors.push(format!("{whence}: `for` must be a duration, got {other:?}")),
            }
            match r["labels"]["severity"].as_str() {
                Some("critical" | "warning" | "info") => {}
                other => errors.push(format!(
                    "{whence}: labels.severity must be critical|warning|info, got {other:?}"
                )),
            }
            let summary = r["annotations"]["summary"].as_str().unwrap_or_default();
            if summary.trim().is_empty() {
                errors.push(format!("{whence}: no annotations.summary"));
            }
            let used = check_expr(&whence, expr, &families, &mut errors);
            let labels = result_labels(&used, &families);
            for text in r["annotations"]
                .as_mapping()
                .into_iter()
                .flat_map(|m| m.values())
            {
                for l in annotation_label.captures_iter(text.as_str().unwrap_or_default()) {
                    if !labels.contains(&l[1]) {
                        errors.push(format!(
                            "{whence}: annotation uses unknown label `{}`",
                            &l[1]
                        ));
                    }
                }
            }
        }
    }
    for required in [
        "GatewayDown",
        "ProviderDown",
        "HighErrorRate",
        "BudgetBurn",
        "HighP99Latency",
    ] {
        if !names.contains(required) {
            errors.push(format!("missing alert {required}"));
        }
    }

    // The promtool unit tests feed series shaped like the gateway's: same names and labels.
    let tests: serde_yaml::Value = serde_yaml::from_str(&read("conf/prometheus/alerts_test.yml"))
        .expect("alerts_test.yml parses");
    let series_count = tests["tests"]
        .as_sequence()
        .expect("tests:")
        .iter()
        .flat_map(|t| t["input_series"].as_sequence().cloned().unwrap_or_default())
        .map(|s| {
            let series = s["series"].as_str().unwrap_or_default().to_owned();
            check_expr(
                &format!("alerts_test.yml series {series}"),
                &series,
                &families,
                &mut errors,
            );
        })
        .count();
    assert!(series_count > 0, "alerts_test.yml has no input series");

    assert!(
        errors.is_empty(),
        "alert rule problems:\n{}",
        errors.join("\n")
    );
    println!("alerts: {names:?}");
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let dir = repo_file("conf/prometheus");
    let version = Command::new("promtool").arg("--version").output();
    if version.is_err() {
        eprintln!(
            "\n************************************************************************\n\
             SKIPPED: promtool is not on PATH, so conf/prometheus/alerts.yml was only\n\
             checked by the parser test (alert_rules_are_complete_and_name_exported_metrics).\n\
             Install it (Debian: apt-get install prometheus) to run `promtool check rules`\n\
             and the rule unit tests (conf/prometheus/alerts_test.yml).\n\
             ************************************************************************\n"
        );
        return;
    }
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
        println!("promtool {}: {}", args.join(" "), text.trim());
    }
}

#[test]
fn the_checker_itself_catches_wrong_names_and_labels() {
    let text = "# HELP ai_proxy_a_total A.\n# TYPE ai_proxy_a_total counter\n\
                ai_proxy_a_total{x=\"1\",y=\"a,b=c\"} 2\n\
                # HELP ai_proxy_h_seconds H.\n# TYPE ai_proxy_h_seconds histogram\n\
                ai_proxy_h_seconds_bucket{p=\"q\",le=\"0.5\"} 1\n\
                ai_proxy_h_seconds_sum{p=\"q\"} 0.1\nai_proxy_h_seconds_count{p=\"q\"} 1\n\
                # HELP ai_proxy_g G.\n# TYPE ai_proxy_g gauge\nai_proxy_g 0\n";
    let f = parse_exposition(text);
    assert_eq!(f.len(), 3);
    assert_eq!(
        f["ai_proxy_a_total"].labels,
        BTreeSet::from(["x".into(), "y".into()])
    );
    assert_eq!(f["ai_proxy_h_seconds"].kind, "histogram");
    assert_eq!(f["ai_proxy_h_seconds"].labels, BTreeSet::from(["p".into()]));

    let mut errors = Vec::new();
    let good = r#"histogram_quantile(0.9, sum by (p, le) (rate(ai_proxy_h_seconds_bucket{p="x=y", instance=~"$i"}[5m])))
                  / sum(ai_proxy_a_total{x=~"$v"}) + ai_proxy_g"#;
    let used = check_expr("good", good, &f, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(used.len(), 3);

    for (bad, why) in [
        ("rate(ai_proxy_nope_total[5m])", "is not a metric"),
        ("rate(ai_proxy_h_seconds[5m])", "is a histogram"),
        (r#"ai_proxy_a_total{z="1"}"#, "has no label `z`"),
        ("sum by (model) (ai_proxy_a_total)", "groups by `model`"),
    ] {
        let mut errors = Vec::new();
        check_expr("bad", bad, &f, &mut errors);
        assert!(
            errors.iter().any(|e| e.contains(why)),
            "{bad}: expected {why:?}, got {errors:?}"
        );
    }
}
