//! The README as test data: its sections, fenced blocks, inline code and tables, so that
//! `tests/tests/readme.rs` runs the README's own examples against the real `weir` and
//! fails when the README and the tools drift apart.
//!
//! Markdown is read only as far as this README writes it: `#` headings outside fenced
//! blocks, ```` ``` ```` fences, single-backtick code spans (which may break across a line),
//! and `|` tables.

use std::path::PathBuf;

/// The repository's README.md.
pub struct Readme {
    text: String,
}

/// One section: from its heading to the next heading of any level.
#[derive(Clone, Debug)]
pub struct Section {
    /// The heading line, `#` marks included.
    pub heading: String,
    /// The lines after the heading.
    pub text: String,
}

impl Readme {
    /// Reads README.md at the workspace root.
    pub fn load() -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { text }
    }

    /// The line number (from 1) where `text` first starts, for failure messages.
    pub fn line_of(&self, text: &str) -> Option<usize> {
        let at = self.text.find(text)?;
        Some(self.text[..at].matches('\n').count() + 1)
    }

    /// The section whose heading contains `title`; panics when there is none, naming it.
    pub fn section(&self, title: &str) -> Section {
        sections(&self.text)
            .into_iter()
            .find(|s| s.heading.contains(title))
            .unwrap_or_else(|| panic!("README.md has no section headed {title:?}"))
    }
}

fn sections(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && line.starts_with('#') {
            out.push(Section {
                heading: line.to_string(),
                text: String::new(),
            });
        } else if let Some(s) = out.last_mut() {
            s.text.push_str(line);
            s.text.push('\n');
        }
    }
    out
}

impl Section {
    /// The fenced blocks, in order, without their fences.
    pub fn blocks(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur: Option<String> = None;
        for line in self.text.lines() {
            if line.starts_with("```") {
                match cur.take() {
                    Some(b) => out.push(b),
                    None => cur = Some(String::new()),
                }
            } else if let Some(b) = cur.as_mut() {
                b.push_str(line);
                b.push('\n');
            }
        }
        out
    }

    /// The first fenced block whose text contains `needle`.
    pub fn block(&self, needle: &str) -> String {
        self.blocks()
            .into_iter()
            .find(|b| b.contains(needle))
            .unwrap_or_else(|| panic!("no block with {needle:?} in {}", self.heading))
    }

    /// The text outside fenced blocks and tables on one line, whitespace runs as one space.
    pub fn prose(&self) -> String {
        let mut fenced = false;
        let mut words = Vec::new();
        for line in self.text.lines() {
            if line.starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if !fenced && !line.starts_with('|') {
                words.extend(line.split_whitespace());
            }
        }
        words.join(" ")
    }

    /// The prose from the first `from` up to the next `to` after it (or the end).
    pub fn between(&self, from: &str, to: &str) -> String {
        let prose = self.prose();
        let start = prose
            .find(from)
            .unwrap_or_else(|| panic!("no {from:?} in {}", self.heading));
        let rest = &prose[start..];
        let end = rest[from.len()..]
            .find(to)
            .map_or(rest.len(), |i| i + from.len());
        rest[..end].to_string()
    }

    /// The code spans of the prose, in order.
    pub fn codes(&self) -> Vec<String> {
        codes(&self.prose())
    }

    /// The first code span of the prose that starts with `prefix`.
    pub fn code(&self, prefix: &str) -> String {
        self.codes()
            .into_iter()
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}...` in {}", self.heading))
    }

    /// The rows of its tables (header included, separator rows left out), each as its
    /// cells trimmed.
    pub fn table_rows(&self) -> Vec<Vec<String>> {
        self.text
            .lines()
            .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
            .map(cells)
            .collect()
    }
}

/// The code spans of `text`, in order.
pub fn codes(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The cells of a table row; a `|` inside a code span is not a separator.
fn cells(row: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut code = false;
    for c in row.trim().trim_start_matches('|').chars() {
        match c {
            '`' => {
                code = !code;
                cur.push(c);
            }
            '|' if !code => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# Top\nintro\n## A `b`\nSay `x\ny` and `z`.\n\n```sh\n# not a heading\n$ run `q`\n```\n| h | `a | b` |\n|---|---|\n| 1 | 2 |\n### C\nend\n";

    #[test]
    fn sections_end_at_the_next_heading_and_a_hash_in_a_block_is_no_heading() {
        let r = Readme {
            text: TEXT.to_string(),
        };
        let s = r.section("## A");
        assert_eq!(s.blocks(), ["# not a heading\n$ run `q`\n"]);
        assert_eq!(s.prose(), "Say `x y` and `z`.");
        assert_eq!(s.codes(), ["x y", "z"]);
        assert_eq!(s.code("z"), "z");
        assert_eq!(s.between("and", "."), "and `z`");
        assert_eq!(s.table_rows(), [vec!["h", "`a | b`"], vec!["1", "2"]]);
        assert_eq!(r.section("C").text, "end\n");
        assert_eq!(r.line_of("| 1"), Some(13));
        assert_eq!(r.line_of("intro"), Some(2));
    }
}
