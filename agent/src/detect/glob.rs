//! A tiny glob for choosing which keys a detector applies to.

use std::fmt;

/// A tiny glob: `*` matches any run of characters (including none), every other
/// character matches itself. There is no escape and no `?`: sensor and metric
/// names are plain identifiers, and a richer syntax would only invite surprises
/// in config files.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Glob(String);

impl Glob {
    /// Builds a glob from its pattern. Every string is a valid pattern.
    pub fn new(pattern: &str) -> Self {
        Self(pattern.to_owned())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` matches the whole pattern.
    ///
    /// Works on bytes: a literal UTF-8 sequence can only match at a character
    /// boundary of valid UTF-8 text, so this equals matching on `char`s.
    /// Linear backtracking to the last `*` only, so O(pattern * text) at worst;
    /// it runs once per new key, never per reading.
    pub fn matches(&self, text: &str) -> bool {
        let p = self.0.as_bytes();
        let t = text.as_bytes();
        let (mut pi, mut ti) = (0, 0);
        // Position after the last `*` seen and the text position it was tried at.
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi + 1, ti));
                pi += 1;
            } else if pi < p.len() && p[pi] == t[ti] {
                pi += 1;
                ti += 1;
            } else if let Some((after_star, tried_at)) = star {
                // Let the last `*` swallow one more character and retry.
                pi = after_star;
                ti = tried_at + 1;
                star = Some((after_star, tried_at + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Glob {
    fn from(pattern: &str) -> Self {
        Self::new(pattern)
    }
}

impl From<String> for Glob {
    fn from(pattern: String) -> Self {
        Self(pattern)
    }
}

impl From<Glob> for String {
    fn from(glob: Glob) -> Self {
        glob.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_star_matches_anything_including_the_empty_name() {
        let g = Glob::new("*");
        assert!(g.matches(""));
        assert!(g.matches("temperature"));
    }

    #[test]
    fn a_prefix_glob_matches_names_that_start_with_the_prefix() {
        let g = Glob::new("temp*");
        assert!(g.matches("temp"));
        assert!(g.matches("temperature"));
        assert!(!g.matches("humidity"));
        assert!(!g.matches("atemp"));
    }

    #[test]
    fn a_literal_glob_matches_only_itself() {
        let g = Glob::new("greenhouse");
        assert!(g.matches("greenhouse"));
        assert!(!g.matches("greenhouse2"));
        assert!(!g.matches("greenhous"));
        assert!(!g.matches(""));
    }

    #[test]
    fn stars_in_the_middle_and_at_both_ends_backtrack_correctly() {
        assert!(Glob::new("*house*").matches("greenhouse-2"));
        assert!(Glob::new("a*b*c").matches("aXbYbZc"));
        assert!(!Glob::new("a*b*c").matches("aXbYbZ"));
        assert!(Glob::new("a**c").matches("ac"));
        assert!(Glob::new("*-bme280").matches("kitchen-bme280"));
        assert!(!Glob::new("*-bme280").matches("kitchen-bme2800"));
    }

    #[test]
    fn non_ascii_names_match_as_characters() {
        assert!(Glob::new("t*ü").matches("tempü"));
        assert!(Glob::new("é*").matches("été"));
        assert!(!Glob::new("é*").matches("ete"));
    }

    #[test]
    fn a_glob_displays_as_its_pattern() {
        assert_eq!(Glob::new("temp*").to_string(), "temp*");
    }
}
