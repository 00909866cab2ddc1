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

/// The key, as a user writes it (`uplink.port`, `detector[1].high`), whose name or
/// value covers byte `offset`: serde's type errors ("invalid type: string, expected
/// u16") carry only a span, and a technician needs the key too.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    fn within(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
        span.is_some_and(|r| r.start <= offset && offset < r.end.max(r.start + 1))
    }
    fn walk(table: &dyn toml_edit::TableLike, offset: usize, path: &mut String) -> bool {
        for (name, item) in table.iter() {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name);
            if let Some(aot) = item.as_array_of_tables() {
                for (i, t) in aot.iter().enumerate() {
                    let inner = path.len();
                    path.push_str(&format!("[{i}]"));
                    if walk(t, offset, path) || within(t.span(), offset) {
                        return true;
                    }
                    path.truncate(inner);
                }
            } else if let Some(t) = item.as_table_like() {
                if walk(t, offset, path) {
                    return true;
                }
            }
            let key_span = table.key(name).and_then(toml_edit::Key::span);
            if within(key_span, offset) || (item.is_value() && within(item.span(), offset)) {
                return true;
            }
            path.truncate(len);
        }
        false
    }
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut path = String::new();
    walk(doc.as_table(), offset, &mut path).then_some(path)
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
#[allow(clippy::unwrap_used)]
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
    fn the_key_at_an_offset_is_named_as_written() {
        let at = |needle: &str| key_at(TEXT, TEXT.find(needle).unwrap());
        assert_eq!(at("3\n").as_deref(), Some("detector[1].high"));
        assert_eq!(at("high").as_deref(), Some("detector[1].high"));
        assert_eq!(at("\"0s\"").as_deref(), Some("engine.window.size"));
        assert_eq!(at("\"x\"").as_deref(), Some("agent.device"));
        assert_eq!(key_at(TEXT, 0), None, "a table header is not a key");
    }

    #[test]
    fn a_path_absent_from_the_file_has_no_line() {
        assert_eq!(line_of(TEXT, &[Seg::Key("uplink"), Seg::Key("host")]), None);
    }
}
