//! `${VAR}` and `${VAR:-default}` substitution in every string of the YAML tree.
//!
//! Substitution happens after YAML parsing, on string scalars only, so a value taken from the
//! environment can never change the document's structure. Problems name the key path and the
//! variable, never the value: every value taken from the environment is remembered with its
//! variable and key path ([`Substituted`]), and [`redact`] replaces it by `${NAME}` in the
//! problems found later (a secret put in the wrong field is not echoed by `check`).

use serde_yaml::Value;

use super::Problem;

/// A value that came from the environment: where, from which variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituted {
    pub path: String,
    pub name: String,
    pub value: String,
}

/// Values shorter than this are redacted only in problems about their own key path (or a
/// parent or child of it): `${THREADS}` = `4` must not turn every `4` of every message
/// into `${THREADS}`; a longer one is redacted wherever it shows up.
const REDACT_EVERYWHERE_LEN: usize = 6;

/// Substitutes variables in place, using `lookup` to read the environment; returns what
/// was substituted.
pub fn substitute(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Vec<Substituted> {
    let mut subs = Vec::new();
    walk(value, &mut String::new(), lookup, problems, &mut subs);
    subs
}

/// Replaces every environment value in `problems` by its variable's name.
pub fn redact(problems: &mut [Problem], subs: &[Substituted]) {
    if subs.is_empty() {
        return;
    }
    // Longest values first: one that contains another is replaced whole.
    let mut subs: Vec<&Substituted> = subs.iter().filter(|s| !s.value.is_empty()).collect();
    subs.sort_by_key(|s| std::cmp::Reverse(s.value.len()));
    for p in problems {
        for s in &subs {
            let related = related_paths(&p.path, &s.path);
            if (related || s.value.len() >= REDACT_EVERYWHERE_LEN) && p.why.contains(&s.value) {
                p.why = p.why.replace(&s.value, &format!("${{{}}}", s.name));
            }
        }
    }
}

/// `a` is `b`, or one is a parent of the other (`providers.x` and `providers.x.endpoint`).
fn related_paths(a: &str, b: &str) -> bool {
    let under = |child: &str, parent: &str| {
        parent.is_empty()
            || child == parent
            || child
                .strip_prefix(parent)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    };
    under(a, b) || under(b, a)
}

fn walk(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
    subs: &mut Vec<Substituted>,
) {
    match value {
        Value::String(s) if s.contains("${") => {
            let found = std::cell::RefCell::new(Vec::new());
            let tracked = |name: &str| {
                let v = lookup(name);
                if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                    found.borrow_mut().push(Substituted {
                        path: path.clone(),
                        name: name.to_owned(),
                        value: v.clone(),
                    });
                }
                v
            };
            match expand(s, &tracked) {
                Ok(expanded) => *s = expanded,
                Err(why) => problems.push(Problem::new(path.clone(), why)),
            }
            subs.extend(found.into_inner());
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                match k {
                    Value::String(k) => path.push_str(k),
                    other => path.push_str(serde_yaml::to_string(other).unwrap_or_default().trim()),
                }
                walk(v, path, lookup, problems, subs);
                path.truncate(len);
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(v, path, lookup, problems, subs);
                path.truncate(len);
            }
        }
        Value::Tagged(t) => walk(&mut t.value, path, lookup, problems, subs),
        _ => {}
    }
}

/// Expands every `${NAME}` / `${NAME:-default}` in `s`. `$${` is a literal `${`.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = stripped;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err("unterminated ${...} expression".into());
        };
        let expr = &body[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{expr}}}` is not a valid variable reference"));
        }
        match (lookup(name), default) {
            (Some(v), _) if !(v.is_empty() && default.is_some()) => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (Some(v), None) => out.push_str(&v),
            (None, None) => {
                return Err(format!(
                "environment variable {name} is not set (use ${{{name}:-default}} to allow that)"
            ))
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_plain_default_and_literal() {
        assert_eq!(expand("${KEY}", &env).unwrap(), "s3cret");
        assert_eq!(expand("a-${NOPE:-b}-c", &env).unwrap(), "a-b-c");
        assert_eq!(expand("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(expand("${NOPE:-}", &env).unwrap(), "");
        assert_eq!(expand("$${KEY} $5", &env).unwrap(), "${KEY} $5");
    }

    #[test]
    fn errors_name_the_variable_never_a_value() {
        let e = expand("${MISSING}", &env).unwrap_err();
        assert!(e.contains("MISSING"));
        assert!(expand("${KEY", &env).is_err());
        assert!(expand("${bad-name}", &env).is_err());
    }

    #[test]
    fn values_from_the_environment_are_named_not_echoed() {
        let mut v: Value =
            serde_yaml::from_str("a:\n  endpoint: ${KEY}\n  n: \"${N}\"\nb: x\n").unwrap();
        let lookup = |n: &str| match n {
            "KEY" => Some("sk-live-0123456789".to_string()),
            "N" => Some("4".to_string()),
            _ => None,
        };
        let subs = substitute(&mut v, &lookup, &mut Vec::new());
        assert_eq!(subs.len(), 2);
        let mut problems = vec![
            Problem::new(
                "a.endpoint",
                "`sk-live-0123456789` must start with https://",
            ),
            Problem::new("other", "sk-live-0123456789 again"),
            Problem::new("a.n", "`4` is not between 1 and 3"),
            Problem::new("b", "must be between 1 and 4"),
        ];
        redact(&mut problems, &subs);
        assert_eq!(problems[0].why, "`${KEY}` must start with https://");
        assert_eq!(problems[1].why, "${KEY} again");
        assert_eq!(problems[2].why, "`${N}` is not between 1 and 3");
        assert_eq!(problems[3].why, "must be between 1 and 4");
    }

    #[test]
    fn problems_carry_the_key_path() {
        let mut v: Value = serde_yaml::from_str("auth:\n  keys:\n    - key: ${MISSING}\n").unwrap();
        let mut problems = Vec::new();
        substitute(&mut v, &env, &mut problems);
        assert_eq!(problems[0].path, "auth.keys[0].key");
    }
}
