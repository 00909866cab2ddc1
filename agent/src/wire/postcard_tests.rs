//! The postcard payload: round trips, the documented layout pinned byte for byte (the
//! golden vectors are the examples in `docs/wire.md`), and refusal of bad input.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::body::{PaneBody, Timing};
use super::fixtures;
use super::postcard::{DecodeError, SCHEMA_VERSION, decode, encode, to_json};
use super::{Format, Message, Wire};
use crate::outbox::NewMessage;

const PANE: &str = "01 00 05 70 69 2d 30 31 02 67 68 04 74 65 6d 70 c0 a9 07 80 d3 0e 01 01 00 03 \
    00 00 00 00 00 c0 4f 40 00 00 00 00 00 40 34 40 00 00 00 00 00 00 36 40 ab aa aa aa aa 2a 35 40 \
    68 ac 9e 4d 85 f0 e6 3f 00 00 00 00 00 40 35 40 00 00 00 00 00 40 34 40 00 00 00 a0 ef 0f";
const PANE_QUANTILES_TAIL: &str = "01 00 00 00 00 00 40 35 40 01 00 00 00 00 00 00 36 40 \
    01 00 00 00 00 00 00 36 40 a0 ef 0f";
const ALERT_RAISED: &str = "01 01 05 70 69 2d 30 31 15 67 68 2f 74 65 6d 70 2f 74 6f 6f 2d 68 \
    6f 74 2f 39 30 30 30 30 02 67 68 04 74 65 6d 70 07 74 6f 6f 2d 68 6f 74 06 7a 73 63 6f 72 65 \
    00 02 00 00 00 00 00 c0 44 40 01 00 00 00 00 00 20 34 40 00 00 00 00 00 80 41 40 18 76 61 6c \
    75 65 20 34 31 2e 35 20 61 62 6f 76 65 20 68 69 67 68 20 33 35 b0 cc 0b a0 fe 0a a0 ef 0f";
const ALERT_CLEARED: &str = "01 01 05 70 69 2d 30 31 15 67 68 2f 74 65 6d 70 2f 74 6f 6f 2d 68 \
    6f 74 2f 39 30 30 30 30 02 67 68 04 74 65 6d 70 07 74 6f 6f 2d 68 6f 74 09 74 68 72 65 73 68 \
    6f 6c 64 01 02 00 00 00 00 00 c0 44 40 00 00 00 00 00 00 80 41 40 18 76 61 6c 75 65 20 34 31 \
    2e 35 20 61 62 6f 76 65 20 68 69 67 68 20 33 35 b0 cc 0b a0 fe 0a a0 ef 0f";
const LATE: &str = "01 02 05 70 69 2d 30 31 04 62 30 30 37 01 02 67 68 04 74 65 6d 70 00 00 00 \
    00 00 00 0c c0 a0 9c 01 01 80 b5 18 b8 17 a0 ef 0f";
const DEAD_LETTER: &str = "01 03 05 70 69 2d 30 31 04 62 30 30 37 02 0f 73 65 6e 73 6f 72 73 2f \
    67 68 2f 74 65 6d 70 0c 6e 6f 74 5f 61 5f 6e 75 6d 62 65 72 16 22 77 61 72 6d 22 20 69 73 20 \
    6e 6f 74 20 61 20 6e 75 6d 62 65 72 04 77 61 72 6d 80 89 0f a0 ef 0f";

fn bytes(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

/// Every fixture through a wire of `format`, in the order the golden vectors are listed.
fn all(format: Format) -> Vec<NewMessage> {
    let mut w = Wire::with_boot_id("pi-01", "weir/pi-01", "b007").with_format(format);
    vec![
        w.pane(&fixtures::pane(false), 130_000),
        w.pane(&fixtures::pane(true), 130_000),
        w.alert(&fixtures::alert(true), 130_000),
        w.alert(&fixtures::alert(false), 130_000),
        w.late(&fixtures::late(), 130_000),
        w.dead_letter(&fixtures::dead_letter(), 130_000),
    ]
}

#[test]
fn every_kind_is_laid_out_byte_for_byte_as_documented() {
    let pane = bytes(PANE);
    let mut pane_q = pane[..pane.len() - 6].to_vec();
    pane_q.extend(bytes(PANE_QUANTILES_TAIL));
    let golden = [
        pane,
        pane_q,
        bytes(ALERT_RAISED),
        bytes(ALERT_CLEARED),
        bytes(LATE),
        bytes(DEAD_LETTER),
    ];
    for (m, want) in all(Format::Postcard).iter().zip(golden) {
        assert_eq!(m.payload, want, "{}", m.topic);
    }
}

#[test]
fn the_examples_in_docs_wire_md_are_the_golden_vectors() {
    let doc = include_str!("../../../docs/wire.md");
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    for golden in [LATE, DEAD_LETTER] {
        assert!(doc.contains(&format!("`{}`", flat(golden))), "{golden}");
    }
    // The pane's annotated dump: every byte in order.
    let dump: Vec<u8> = doc
        .split("offset  bytes")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap()
        .lines()
        .skip(1)
        .flat_map(|l| {
            l.get(8..58)
                .unwrap_or("")
                .replace('/', " ")
                .split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(dump, bytes(PANE));
}

#[test]
fn decoding_a_postcard_payload_gives_the_json_the_json_format_publishes() {
    for (p, j) in all(Format::Postcard).iter().zip(all(Format::Json)) {
        assert_eq!(
            (&p.topic, &p.class),
            (&j.topic, &j.class),
            "topics stay the same"
        );
        assert_eq!(p.supersede_key, j.supersede_key);
        assert_eq!(
            String::from_utf8(to_json(&p.payload).unwrap()).unwrap(),
            String::from_utf8(j.payload).unwrap()
        );
    }
}

#[test]
fn a_postcard_pane_is_less_than_a_third_of_its_json() {
    let (p, j) = (&all(Format::Postcard)[0], &all(Format::Json)[0]);
    assert!(
        p.payload.len() * 3 < j.payload.len(),
        "{} vs {}",
        p.payload.len(),
        j.payload.len()
    );
}

#[test]
fn every_kind_round_trips_through_decode() {
    for m in all(Format::Postcard) {
        let msg = decode(&m.payload).unwrap();
        assert_eq!(encode(&msg), m.payload);
    }
    let kinds: Vec<_> = all(Format::Postcard)
        .iter()
        .map(|m| decode(&m.payload).unwrap().kind() as u8)
        .collect();
    assert_eq!(kinds, [0, 0, 1, 1, 2, 3]);
}

#[test]
fn every_truncation_of_every_kind_is_refused_as_truncated() {
    for m in all(Format::Postcard) {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        for len in 1..m.payload.len() {
            let err = decode(&m.payload[..len]).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated { len: l, .. } if l == len),
                "{} cut to {len}: {err:?}",
                m.topic
            );
        }
    }
}

#[test]
fn a_wrong_version_json_or_an_unknown_kind_is_refused_by_name() {
    let mut p = all(Format::Postcard).remove(0).payload;
    p[0] = 2;
    assert_eq!(decode(&p), Err(DecodeError::UnknownVersion(2)));
    assert!(decode(&p).unwrap_err().to_string().contains("version 2"));
    assert_eq!(decode(br#"{"v":1}"#), Err(DecodeError::Json));
    assert_eq!(
        decode(&[SCHEMA_VERSION, 9, 0]),
        Err(DecodeError::UnknownKind(9))
    );
    assert_eq!(decode(&[SCHEMA_VERSION, 4]), Err(DecodeError::Status));
}

#[test]
fn trailing_bytes_and_bad_fields_are_refused_as_malformed() {
    let pane = bytes(PANE);
    let mut long = pane.clone();
    long.push(b'\n');
    assert!(matches!(
        decode(&long),
        Err(DecodeError::TrailingBytes {
            kind: "pane",
            extra: 1
        })
    ));
    // Offsets in docs/wire.md's pane example: 23 timing, 24 final, 3 the device's first byte.
    for (at, value) in [(23, 2u8), (24, 2), (3, 0xff)] {
        let mut bad = pane.clone();
        bad[at] = value;
        assert!(
            matches!(
                decode(&bad),
                Err(DecodeError::Malformed { kind: "pane", .. })
            ),
            "byte {at} = {value}: {:?}",
            decode(&bad)
        );
    }
    // The option tag of p50 (byte 82) may only be 0 or 1.
    let mut bad = pane;
    bad[82] = 7;
    assert!(matches!(decode(&bad), Err(DecodeError::Malformed { .. })));
}

fn pane_body<'a>(device: &'a str, sensor: &'a str, nums: (i64, u32, u64, f64)) -> PaneBody<'a> {
    let (t, revision, count, x) = nums;
    PaneBody {
        device,
        sensor,
        metric: sensor,
        window_start: t,
        window_end: t.wrapping_add(1),
        revision,
        timing: if revision == 0 {
            Timing::OnTime
        } else {
            Timing::Late
        },
        is_final: revision % 2 == 0,
        count,
        sum: x,
        min: -x,
        max: x * 2.0,
        mean: x / 3.0,
        stddev: 0.0,
        first: f64::MIN_POSITIVE,
        last: f64::MAX,
        p50: (count % 2 == 0).then_some(x),
        p90: None,
        p99: Some(-0.0),
        emitted_at: -t,
    }
}

proptest! {
    #[test]
    fn any_pane_round_trips_and_any_bytes_decode_without_panicking(
        device in "\\PC{0,12}",
        sensor in "\\PC{0,12}",
        t in any::<i64>(),
        revision in any::<u32>(),
        count in any::<u64>(),
        x in -1e300f64..1e300,
        garbage in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let m = Message::Pane(pane_body(&device, &sensor, (t, revision, count, x)));
        let bytes = encode(&m);
        prop_assert_eq!(decode(&bytes).unwrap(), m);
        let _ = decode(&garbage);
    }
}
