//! A small JSON object writer for the messages' payloads, byte for byte what serde_json writes.
//!
//! `weir backtest` turns tens of thousands of panes and alerts into JSON; through serde_json's
//! generic path (and a `json!` value tree for alerts) that was about 11,500 instructions a
//! message. This writes straight into the caller's `Vec<u8>` with the same number formatters
//! serde_json uses (`itoa` for integers, `zmij` for finite floats, `null` for non-finite ones)
//! and the same string escapes (`"`, `\`, and control characters; nothing else). The unit tests
//! in `json_writer_tests.rs` compare its output with serde_json's on awkward strings and floats, so a
//! divergence (e.g. after a serde_json upgrade that changes float formatting) fails.
//!
//! Invariant: the caller writes keys in the order serde_json would (struct field order, or
//! sorted for what used to be a `json!` map), and `open` / `close` pair up.

/// Writes one JSON object into a byte buffer.
pub(crate) struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    /// Starts an object (`{`) at the end of `out`.
    pub(crate) fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Ends the object (`}`).
    pub(crate) fn close(self) {
        self.out.push(b'}');
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        // Keys are our own literals: plain ASCII with nothing to escape.
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// `"k":"v"`, escaped.
    pub(crate) fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        string(self.out, v);
    }

    /// `"k":"a<sep>b..."`: the pieces written as one escaped string, without building it first.
    pub(crate) fn str_parts(&mut self, k: &str, parts: &[&str]) {
        self.key(k);
        self.out.push(b'"');
        for p in parts {
            escape_into(self.out, p);
        }
        self.out.push(b'"');
    }

    /// `"k":"..."` with the string's inside (already escaped) written by `f`.
    pub(crate) fn raw_str(&mut self, k: &str, f: impl FnOnce(&mut Vec<u8>)) {
        self.key(k);
        self.out.push(b'"');
        f(self.out);
        self.out.push(b'"');
    }

    /// `"k":<integer>`.
    pub(crate) fn int<I: itoa::Integer>(&mut self, k: &str, v: I) {
        self.key(k);
        int(self.out, v);
    }

    /// `"k":<float>`, `null` if not finite.
    pub(crate) fn f64(&mut self, k: &str, v: f64) {
        self.key(k);
        float(self.out, v);
    }

    /// `"k":<float>` or `"k":null`.
    pub(crate) fn opt_f64(&mut self, k: &str, v: Option<f64>) {
        self.key(k);
        match v {
            Some(v) => float(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// `"k":true` / `"k":false`.
    pub(crate) fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
    }
}

/// An integer as serde_json writes it.
pub(crate) fn int<I: itoa::Integer>(out: &mut Vec<u8>, v: I) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A float as serde_json writes it: shortest round-trip digits, `null` if not finite.
pub(crate) fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A quoted, escaped JSON string.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_into(out, s);
    out.push(b'"');
}

/// The escape serde_json writes for byte `b`, or 0 if it is written as is. `u` means `\u00XX`.
const fn escape_of(b: u8) -> u8 {
    match b {
        0x08 => b'b',
        0x09 => b't',
        0x0A => b'n',
        0x0C => b'f',
        0x0D => b'r',
        b'"' => b'"',
        b'\\' => b'\\',
        0x00..=0x1F => b'u',
        _ => 0,
    }
}

const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = escape_of(i as u8);
        i += 1;
    }
    t
};

/// Whether no byte of `b` needs escaping in JSON (a control byte, `"` or
/// `\\`), eight bytes at a time: a byte-by-byte test was most of the cost of
/// the backtest's score records' short strings. The tests (from Bit Twiddling
/// Hacks, `haszero` and `hasless`) are exact.
pub(super) fn plain(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w);
        if below(x, 0x20)
            || below(x ^ (ONES * u64::from(b'"')), 1)
            || below(x ^ (ONES * u64::from(b'\\')), 1)
        {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&c| c >= 0x20 && c != b'"' && c != b'\\')
}

/// `s` with serde_json's escapes; runs of bytes that need none are copied at once.
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if plain(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let e = ESCAPE[b as usize];
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if e == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xF) as usize]);
        } else {
            out.push(b'\\');
            out.push(e);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}
