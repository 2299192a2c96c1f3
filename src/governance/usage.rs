//! `switchyard usage` and `GET /admin/usage`: spend and tokens grouped by user, key, model
//! or provider, as a table, CSV or JSON.

use crate::store::{GroupBy, ReportRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "table" => Format::Table,
            "csv" => Format::Csv,
            "json" => Format::Json,
            _ => return None,
        })
    }
}

pub fn json(by: GroupBy, since: &str, rows: &[ReportRow]) -> serde_json::Value {
    let data: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                by.as_str(): r.group,
                "requests": r.requests,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "cost_usd": r.cost_usd,
            })
        })
        .collect();
    serde_json::json!({"by": by.as_str(), "since": since, "data": data})
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

pub fn render(format: Format, by: GroupBy, since: &str, rows: &[ReportRow]) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&json(by, since, rows)).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Csv => {
            let mut s = format!(
                "{},requests,input_tokens,output_tokens,cost_usd\n",
                by.as_str()
            );
            for r in rows {
                s.push_str(&format!(
                    "{},{},{},{},{:.6}\n",
                    csv_field(&r.group),
                    r.requests,
                    r.input_tokens,
                    r.output_tokens,
                    r.cost_usd
                ));
            }
            s
        }
        Format::Table => {
            let w = rows
                .iter()
                .map(|r| r.group.chars().count())
                .chain([by.as_str().len(), 5])
                .max()
                .unwrap_or(8);
            let mut s = format!(
                "{:<w$}  {:>10}  {:>14}  {:>14}  {:>12}\n",
                by.as_str(),
                "requests",
                "input_tokens",
                "output_tokens",
                "cost_usd"
            );
            let (mut n, mut i, mut o, mut c) = (0, 0, 0, 0.0);
            for r in rows {
                s.push_str(&format!(
                    "{:<w$}  {:>10}  {:>14}  {:>14}  {:>12.4}\n",
                    r.group, r.requests, r.input_tokens, r.output_tokens, r.cost_usd
                ));
                n += r.requests;
                i += r.input_tokens;
                o += r.output_tokens;
                c += r.cost_usd;
            }
            s.push_str(&format!(
                "{:<w$}  {:>10}  {:>14}  {:>14}  {:>12.4}\n",
                "total", n, i, o, c
            ));
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let rows = vec![ReportRow {
            group: "a,b".into(),
            requests: 2,
            input_tokens: 10,
            output_tokens: 5,
            cost_usd: 0.25,
        }];
        let csv = render(Format::Csv, GroupBy::User, "7d", &rows);
        assert_eq!(
            csv,
            "user,requests,input_tokens,output_tokens,cost_usd\n\"a,b\",2,10,5,0.250000\n"
        );
        let t = render(Format::Table, GroupBy::Model, "7d", &rows);
        assert!(t.lines().last().unwrap().starts_with("total"), "{t}");
        let j: serde_json::Value =
            serde_json::from_str(&render(Format::Json, GroupBy::Key, "7d", &rows)).unwrap();
        assert_eq!(j["data"][0]["key"], "a,b");
    }
}
