//! `${VAR}` and `${VAR:-default}` substitution in every string of the YAML tree.
//!
//! Substitution happens after YAML parsing, on string scalars only, so a value taken from the
//! environment can never change the document's structure. Problems name the key path and the
//! variable, never the value.

use serde_yaml::Value;

use super::Problem;

/// Substitutes variables in place, using `lookup` to read the environment.
pub fn substitute(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    walk(value, &mut String::new(), lookup, problems);
}

fn walk(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(why) => problems.push(Problem::new(path.clone(), why)),
        },
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
                walk(v, path, lookup, problems);
                path.truncate(len);
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(v, path, lookup, problems);
                path.truncate(len);
            }
        }
        Value::Tagged(t) => walk(&mut t.value, path, lookup, problems),
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
    fn problems_carry_the_key_path() {
        let mut v: Value = serde_yaml::from_str("auth:\n  keys:\n    - key: ${MISSING}\n").unwrap();
        let mut problems = Vec::new();
        substitute(&mut v, &env, &mut problems);
        assert_eq!(problems[0].path, "auth.keys[0].key");
    }
}
