//! The compact binary payload (`[uplink] format = "postcard"`), for metered links.
//!
//! A payload is self-describing: byte 0 is [`SCHEMA_VERSION`], byte 1 the [`Kind`], and the
//! rest is the kind's body struct (see [`super::body`]) in the postcard encoding: unsigned
//! integers as LEB128 varints, signed ones zigzag then varint, `f64` as 8 bytes little-endian,
//! strings as a varint length and UTF-8, `Option` as a 0/1 tag then the value, a `bool` as one
//! byte 0/1, enums as a varint discriminant. `docs/wire.md` lays out every kind byte by byte so
//! that a consumer in another language can decode it; the golden tests below pin that layout.
//!
//! [`decode`] is strict: a wrong version, an unknown kind, a short or over-long payload, a bad
//! UTF-8 string or an out-of-range tag is an error, never a guess. A JSON payload (a format
//! switch leaves older JSON rows in the outbox) starts with `{`, which no schema version is.

use super::body::{Kind, Message};

/// Version of the postcard layout, the first byte of every payload. Version 1 carries the same
/// fields as JSON schema version 1.
pub const SCHEMA_VERSION: u8 = 1;

/// Why bytes are not a postcard payload Weir can read.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Nothing at all.
    #[error("empty payload")]
    Empty,
    /// The payload is JSON (it starts with `{`), not postcard.
    #[error("the payload is JSON already, not postcard")]
    Json,
    /// A schema version this build does not know.
    #[error(
        "unknown postcard schema version {0} (this weir reads version {SCHEMA_VERSION}); \
         decode it with the weir that published it, or a newer one"
    )]
    UnknownVersion(u8),
    /// A kind byte that is not a message kind.
    #[error("unknown message kind {0} (0 pane, 1 alert, 2 late, 3 deadletter)")]
    UnknownKind(u8),
    /// Kind 4 is reserved for status, which is always published as JSON.
    #[error("kind 4 (status) is never postcard: status is always JSON")]
    Status,
    /// The payload ends in the middle of a message.
    #[error("truncated {kind} payload: it ends before the message does ({len} bytes)")]
    Truncated {
        /// The kind announced by byte 1.
        kind: &'static str,
        /// How long the payload was.
        len: usize,
    },
    /// Bytes left after a complete message.
    #[error("{extra} byte(s) after the end of the {kind} message")]
    TrailingBytes {
        /// The kind.
        kind: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A field that is not valid (bad varint, UTF-8, option tag or enum discriminant).
    #[error("malformed {kind} payload: {detail}")]
    Malformed {
        /// The kind.
        kind: &'static str,
        /// What postcard reported.
        detail: String,
    },
}

/// Encodes `m` as a postcard payload.
pub fn encode(m: &Message<'_>) -> Vec<u8> {
    let head = vec![SCHEMA_VERSION, m.kind() as u8];
    let out = match m {
        Message::Pane(b) => postcard::to_extend(b, head),
        Message::Alert(b) => postcard::to_extend(b, head),
        Message::Late(b) => postcard::to_extend(b, head),
        Message::DeadLetter(b) => postcard::to_extend(b, head),
    };
    // Serialising into a Vec can only fail for types postcard cannot express (sequences of
    // unknown length); our bodies are plain structs.
    out.unwrap_or_default()
}

/// Decodes one postcard payload; strings borrow from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version == b'{' {
        return Err(DecodeError::Json);
    }
    if version != SCHEMA_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let (&kind_byte, body) = rest.split_first().ok_or(DecodeError::Truncated {
        kind: "unknown",
        len: bytes.len(),
    })?;
    let kind = Kind::from_byte(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    let name = kind.as_str();
    let fail = |e: postcard::Error| match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated {
            kind: name,
            len: bytes.len(),
        },
        other => DecodeError::Malformed {
            kind: name,
            detail: other.to_string(),
        },
    };
    let (msg, left) = match kind {
        Kind::Pane => postcard::take_from_bytes(body).map(|(b, l)| (Message::Pane(b), l)),
        Kind::Alert => postcard::take_from_bytes(body).map(|(b, l)| (Message::Alert(b), l)),
        Kind::Late => postcard::take_from_bytes(body).map(|(b, l)| (Message::Late(b), l)),
        Kind::DeadLetter => {
            postcard::take_from_bytes(body).map(|(b, l)| (Message::DeadLetter(b), l))
        }
        Kind::Status => return Err(DecodeError::Status),
    }
    .map_err(fail)?;
    if !left.is_empty() {
        return Err(DecodeError::TrailingBytes {
            kind: name,
            extra: left.len(),
        });
    }
    Ok(msg)
}

/// The JSON payload that the `json` format would have published for this postcard payload.
pub fn to_json(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    decode(bytes).map(|m| m.to_json())
}
