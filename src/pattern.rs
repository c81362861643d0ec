//! Name patterns: `*` matches any run of characters (CAN signal settings, API key scopes).
//!
//! Matching takes at most `pattern.len() × name.len()` steps whatever the pattern: the
//! last `*` seen is the only point it ever goes back to (a run of characters a later
//! `*` can absorb never needs an earlier one to absorb more). A backtracking matcher
//! took exponential time on `*a*a*a*…b`, and API keys carry caller-written patterns.

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // The last `*` of the pattern, and the place in the name its run ends at now.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            // The `*` takes one character more, and the rest is tried again after it.
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    /// The plain recursive definition, as a reference for small inputs.
    fn reference(pattern: &str, name: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == name,
            Some((head, rest)) => name.strip_prefix(head).is_some_and(|tail| {
                (0..=tail.len())
                    .filter(|&i| tail.is_char_boundary(i))
                    .any(|i| reference(rest, &tail[i..]))
            }),
        }
    }

    #[test]
    fn matches_as_defined() {
        for (p, n, want) in [
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*", "a", true),
            ("a*", "ba", false),
            ("*b", "aab", true),
            ("*b", "aabc", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbYcZ", false),
            ("gw-*/temp", "gw-01/temp", true),
            ("gw-*/temp", "gw-01/temp2", false),
            ("ä*ö", "äxxö", true),
            ("**", "x", true),
        ] {
            assert_eq!(glob(p, n), want, "{p:?} on {n:?}");
            assert_eq!(reference(p, n), want, "reference {p:?} on {n:?}");
        }
    }

    #[test]
    fn agrees_with_the_definition_on_every_small_case() {
        let alphabet = ['a', 'b', '*'];
        let words = |max: usize, with_star: bool| {
            let mut all = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                let mut next = Vec::new();
                for w in &last {
                    for c in alphabet.iter().filter(|&&c| with_star || c != '*') {
                        next.push(format!("{w}{c}"));
                    }
                }
                all.extend(next.iter().cloned());
                last = next;
            }
            all
        };
        let (patterns, names) = (words(5, true), words(5, false));
        for p in &patterns {
            for n in &names {
                assert_eq!(glob(p, n), reference(p, n), "{p:?} on {n:?}");
            }
        }
    }

    #[test]
    fn a_hostile_pattern_is_answered_at_once() {
        // Exponential for a backtracking matcher (23 s at 38 characters, hours at 64).
        let p = format!("{}b", "*a".repeat(40));
        let n = "a".repeat(4096);
        assert!(!glob(&p, &n));
        assert!(glob(&p, &format!("{n}b")));
    }
}
