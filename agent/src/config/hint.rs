//! The `fix:` line for a TOML or type error, from the parser's message and the line it
//! points at: "did you mean" for an unknown key, the expected kind of value for a type
//! error, the table's name for a duplicate. Pure text in, text out.

/// A fix for the parser's `message` about `line_text` (the offending line, if known).
pub(crate) fn fix(message: &str, line_text: Option<&str>) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        return match nearest(name, &valid) {
            // The parser's message already lists the valid keys.
            Some(best) => format!("did you mean `{best}`?"),
            None => format!(
                "remove it, or use one of: {} (weir config example shows each)",
                valid.join(", ")
            ),
        };
    }
    if message.contains("duplicate key") {
        let header = line_text
            .map(str::trim)
            .filter(|l| l.starts_with('[') && !l.starts_with("[["));
        return match header {
            Some(h) => {
                format!("the table {h} is defined twice: merge the two {h} sections into one")
            }
            None => {
                let key = line_text
                    .and_then(|l| l.split('=').next())
                    .map(str::trim)
                    .filter(|k| !k.is_empty());
                match key {
                    Some(k) => format!("`{k}` is set twice in this table: keep one"),
                    None => "a key or table is given twice: keep one".to_owned(),
                }
            }
        };
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let expected = rest.rsplit_once("expected ").map_or("", |(_, e)| e).trim();
        let what = match expected {
            "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => {
                "a whole number without quotes, e.g. 1883"
            }
            "f32" | "f64" => "a number without quotes, e.g. 21.5",
            "a boolean" => "true or false, without quotes",
            "a string" | "a duration" => "a quoted string, e.g. \"10s\"",
            "a sequence" => "a list in brackets, e.g. [\"a\", \"b\"]",
            _ => "the kind of value weir config example shows for this key",
        };
        return format!("write {what}");
    }
    if message.contains("expected `]`") {
        return "close the table name: [name] or [[name]]".to_owned();
    }
    if message.starts_with("missing field `") {
        return "add it (weir config example shows it with its meaning)".to_owned();
    }
    "compare with weir config example, which shows every key with its type".to_owned()
}

/// The valid name closest to `typed` by edit distance, if close enough to be a typo.
fn nearest<'a>(typed: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (distance(typed, v), *v))
        .filter(|(d, v)| *d <= (v.len().max(typed.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

/// Levenshtein distance, with an adjacent swap counting as one edit (`hots` → `host`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_gets_the_nearest_valid_one() {
        let m = "unknown field `hots`, expected one of `host`, `port`, `client_id`";
        assert_eq!(fix(m, None), "did you mean `host`?");
        let m = "unknown field `zzzzzz`, expected one of `host`, `port`";
        assert!(fix(m, None).starts_with("remove it, or use one of: host, port"));
    }

    #[test]
    fn a_type_error_says_what_to_write() {
        let m = "invalid type: string \"1883\", expected u16";
        assert_eq!(
            fix(m, None),
            "write a whole number without quotes, e.g. 1883"
        );
    }

    #[test]
    fn a_duplicate_table_or_key_is_named() {
        assert_eq!(
            fix("duplicate key", Some("[uplink]\n")),
            "the table [uplink] is defined twice: merge the two [uplink] sections into one"
        );
        assert_eq!(
            fix("duplicate key", Some("port = 2")),
            "`port` is set twice in this table: keep one"
        );
    }
}

/// Why a broker `host` cannot work as written, and what to write: a URL scheme or a
/// port inside the host name fail only at run time, as a name lookup error, while
/// the status stays "healthy" until the upstream has been down long enough.
pub(crate) fn bad_host(host: &str, section: &str) -> Option<(String, String)> {
    let h = host.trim();
    if h.is_empty() {
        return Some((
            "is empty".into(),
            "write the broker's name or address, e.g. host = \"broker.example.com\"".into(),
        ));
    }
    if let Some((scheme, rest)) = h.split_once("://") {
        let rest = rest.trim_end_matches('/');
        let (name, port) = split_port(rest);
        let tls = matches!(scheme, "mqtts" | "ssl" | "tls");
        let mut fix = format!("host = \"{name}\"");
        if let Some(p) = port {
            fix.push_str(&format!(" and port = {p}"));
        }
        if tls && section == "uplink" {
            fix.push_str(", with an [uplink.tls] section for TLS");
        }
        return Some((
            format!("\"{h}\" is a URL; host takes a name or an address only"),
            format!("write {fix}"),
        ));
    }
    if h.contains('/') || h.contains(char::is_whitespace) {
        return Some((
            format!("\"{h}\" is not a host name or address"),
            "write the broker's name or address only, e.g. host = \"192.168.1.10\"".into(),
        ));
    }
    if let (name, Some(p)) = split_port(h) {
        return Some((
            format!("\"{h}\" has a port in it; host takes a name or an address only"),
            format!("write host = \"{name}\" and port = {p}"),
        ));
    }
    None
}

/// `name:port` split when the part after the last colon is a number and the rest is
/// not a bare IPv6 address (which has colons of its own; `[::1]:1883` is split).
fn split_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((addr, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (addr, port);
        }
    }
    match s.rsplit_once(':') {
        Some((name, p)) if !name.contains(':') => match p.parse::<u16>() {
            Ok(port) => (name, Some(port)),
            Err(_) => (s, None),
        },
        _ => (s, None),
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn a_url_or_a_port_in_host_is_refused_with_the_two_keys_to_write() {
        let (p, f) = bad_host("mqtt://127.0.0.1", "uplink").unwrap_or_default();
        assert!(p.contains("is a URL"), "{p}");
        assert_eq!(f, "write host = \"127.0.0.1\"");
        let (_, f) = bad_host("mqtts://b.example:8883/", "uplink").unwrap_or_default();
        assert_eq!(
            f,
            "write host = \"b.example\" and port = 8883, with an [uplink.tls] section for TLS"
        );
        let (p, f) = bad_host("127.0.0.1:1883", "ingest").unwrap_or_default();
        assert!(p.contains("has a port in it"), "{p}");
        assert_eq!(f, "write host = \"127.0.0.1\" and port = 1883");
        let (_, f) = bad_host("[::1]:1883", "ingest").unwrap_or_default();
        assert_eq!(f, "write host = \"::1\" and port = 1883");
    }

    #[test]
    fn names_and_addresses_pass() {
        for h in [
            "localhost",
            "127.0.0.1",
            "broker.example.com",
            "::1",
            "fe80::1",
        ] {
            assert_eq!(bad_host(h, "uplink"), None, "{h}");
        }
    }
}
