//! Finds the line of a key in the TOML text, so that validation errors (which
//! serde cannot see: "size must be positive") still point at the line to fix.

/// One step of a key path: a table key or an index into an array of tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// `[engine]`, `size = ...`
    Key(&'static str),
    /// The n-th `[[detector]]`.
    Index(usize),
}

/// Renders a path as a user writes it: `detector[1].high`.
pub fn render(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// 1-based line of the deepest part of `path` present in `text`, if any
/// (a missing key falls back to the line of its table).
pub fn line_of(text: &str, path: &[Seg]) -> Option<usize> {
    enum Node<'a> {
        Item(&'a toml_edit::Item),
        Table(&'a toml_edit::Table),
    }
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut node = Node::Item(doc.as_item());
    let mut best: Option<std::ops::Range<usize>> = None;
    for seg in path {
        let next = match (seg, &node) {
            (Seg::Key(k), Node::Item(item)) => {
                item.as_table_like().and_then(|t| t.get_key_value(k))
            }
            (Seg::Key(k), Node::Table(t)) => t.get_key_value(k),
            (Seg::Index(i), Node::Item(item)) => {
                match item.as_array_of_tables().and_then(|a| a.get(*i)) {
                    Some(t) => {
                        best = t.span().or(best);
                        node = Node::Table(t);
                        continue;
                    }
                    None => break,
                }
            }
            (Seg::Index(_), Node::Table(_)) => None,
        };
        let Some((key, item)) = next else { break };
        best = key.span().or_else(|| item.span()).or(best);
        node = Node::Item(item);
    }
    best.map(|r| line_at(text, r.start))
}

/// 1-based line number of a byte offset.
pub fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[agent]\ndevice = \"x\"\n\n[engine.window]\nsize = \"0s\"\n\n[[detector]]\nname = \"a\"\n\n[[detector]]\nname = \"b\"\nhigh = 3\n";

    #[test]
    fn a_nested_key_is_found_on_its_line() {
        assert_eq!(
            line_of(
                TEXT,
                &[Seg::Key("engine"), Seg::Key("window"), Seg::Key("size")]
            ),
            Some(5)
        );
        assert_eq!(
            line_of(TEXT, &[Seg::Key("agent"), Seg::Key("device")]),
            Some(2)
        );
    }

    #[test]
    fn a_key_in_the_second_array_table_is_found() {
        let p = [Seg::Key("detector"), Seg::Index(1), Seg::Key("high")];
        assert_eq!(line_of(TEXT, &p), Some(12));
        assert_eq!(render(&p), "detector[1].high");
    }

    #[test]
    fn a_missing_key_falls_back_to_its_table() {
        let p = [Seg::Key("detector"), Seg::Index(0), Seg::Key("high")];
        assert_eq!(line_of(TEXT, &p), Some(7));
    }

    #[test]
    fn a_path_absent_from_the_file_has_no_line() {
        assert_eq!(line_of(TEXT, &[Seg::Key("uplink"), Seg::Key("host")]), None);
    }
}
