//! Per-key scopes: which models (glob patterns) and providers (names) a key may use.
//!
//! Patterns are matched with a tiny glob matcher (`*` any run of characters, `?` one
//! character, everything else literal, case-sensitive) rather than globset: model names are
//! short, patterns few, and the matcher has no compile step, no regex engine and no
//! allocation on the request path.

/// A key's scope: empty lists allow everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub models: Vec<String>,
    pub providers: Vec<String>,
}

impl Scope {
    pub fn is_unrestricted(&self) -> bool {
        self.models.is_empty() && self.providers.is_empty()
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|p| glob_match(p, model))
    }

    pub fn allows_provider(&self, provider: &str) -> bool {
        self.providers.is_empty() || self.providers.iter().any(|p| glob_match(p, provider))
    }
}

/// Glob match with `*` and `?` (iterative, linear backtracking on the last `*`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("gpt-*", "gpt-4o-mini"));
        assert!(glob_match("*", ""));
        assert!(glob_match("claude-*-sonnet*", "claude-3-5-sonnet-20241022"));
        assert!(glob_match("gpt-4?", "gpt-4o"));
        assert!(!glob_match("gpt-4?", "gpt-4o-mini"));
        assert!(!glob_match("gpt-*", "claude-3"));
        assert!(!glob_match("gpt", "gpt-4"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn empty_scope_allows_all() {
        let s = Scope::default();
        assert!(s.allows_model("anything") && s.allows_provider("openai"));
        let s = Scope {
            models: vec!["gpt-*".into(), "mock-*".into()],
            providers: vec!["mock".into()],
        };
        assert!(s.allows_model("mock-fast"));
        assert!(!s.allows_model("claude-3"));
        assert!(s.allows_provider("mock"));
        assert!(!s.allows_provider("openai"));
    }
}
