#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn p(payload: &str) -> Result<ParsedValue, PayloadError> {
    parse(payload.as_bytes(), &PayloadFormat::default())
}

fn value(v: f64) -> Result<ParsedValue, PayloadError> {
    Ok(ParsedValue { value: v, ts: None })
}

fn at(v: f64, ts: TimestampMs) -> Result<ParsedValue, PayloadError> {
    Ok(ParsedValue {
        value: v,
        ts: Some(ts),
    })
}

fn reason(payload: &str) -> &'static str {
    p(payload).unwrap_err().reason()
}

/// 2024-11-21T10:00:00Z.
const T0_S: i64 = 1_732_183_200;

#[test]
fn a_plain_number_is_a_value_without_timestamp() {
    assert_eq!(p("21.5"), value(21.5));
    assert_eq!(p(" 21.5\n"), value(21.5));
    assert_eq!(p("-3"), value(-3.0));
    assert_eq!(p("1e3"), value(1000.0));
}

#[test]
fn nan_and_infinities_in_any_spelling_are_non_finite_not_garbage() {
    for text in [
        "NaN",
        "nan",
        "inf",
        "-inf",
        "Infinity",
        "-INFINITY",
        "1e999",
        "-1e999",
    ] {
        assert_eq!(p(text), Err(PayloadError::NonFinite), "{text}");
    }
}

#[test]
fn text_that_is_not_a_number_is_not_a_number_cut_to_64_chars() {
    assert_eq!(reason("21.5 °C"), "not_a_number");
    assert_eq!(reason("ON"), "not_a_number");
    assert_eq!(reason("\"21.5\""), "not_a_number");
    assert_eq!(reason("[21.5]"), "not_a_number");
    let long = "é".repeat(100);
    match p(&long) {
        Err(PayloadError::NotANumber { text }) => assert_eq!(text, "é".repeat(64)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_size_limit_is_checked_before_anything_else() {
    let fmt = PayloadFormat {
        max_bytes: 4,
        ..PayloadFormat::default()
    };
    assert_eq!(
        parse(&[0xff; 5], &fmt),
        Err(PayloadError::TooLarge { len: 5, limit: 4 })
    );
    assert_eq!(parse(b"1234", &fmt), value(1234.0));
}

#[test]
fn invalid_utf8_is_refused_before_parsing() {
    assert_eq!(
        parse(b"21.\xff", &PayloadFormat::default()),
        Err(PayloadError::NotUtf8)
    );
}

#[test]
fn empty_or_blank_payloads_are_empty() {
    assert_eq!(p(""), Err(PayloadError::Empty));
    assert_eq!(p(" \r\n\t"), Err(PayloadError::Empty));
}

#[test]
fn a_json_object_gives_its_value_and_optional_timestamp() {
    assert_eq!(p(r#"{"value": 21.5}"#), value(21.5));
    assert_eq!(p(r#"{"value": 21.5, "ts": null}"#), value(21.5));
    let ms = T0_S * 1000 + 250;
    assert_eq!(p(&format!(r#"{{"ts": {ms}, "value": 21}}"#)), at(21.0, ms));
    assert_eq!(
        p(&format!(r#" {{"value": -2, "ts": {T0_S}}} "#)),
        at(-2.0, T0_S * 1000)
    );
}

#[test]
fn json_numbers_are_parsed_to_the_exact_nearest_double() {
    // Needs serde_json's float_roundtrip: its fast default parser is 1 ulp off here.
    let v = 4.932_952_992_537_156e-238;
    assert_eq!(p(r#"{"value": 4.932952992537156e-238}"#), value(v));
}

#[test]
fn other_fields_of_any_shape_are_ignored() {
    let payload = r#"{"battery": 97, "update": {"state": "idle", "list": [1, "x", null]},
        "huge": 1e999, "value": 3.25, "linkquality": 120}"#;
    assert_eq!(p(payload), value(3.25));
}

#[test]
fn custom_field_names_are_honoured() {
    let fmt = PayloadFormat {
        value_field: "temperature".into(),
        ts_field: "time".into(),
        ..PayloadFormat::default()
    };
    let payload = br#"{"temperature": 19.75, "time": "2026-11-21T10:00:00Z", "value": "no"}"#;
    assert_eq!(parse(payload, &fmt), at(19.75, 1_795_255_200_000));
}

#[test]
fn a_value_sent_as_a_string_is_the_wrong_type_because_we_are_strict() {
    let wrong = |found| {
        Err(PayloadError::WrongType {
            field: "value".into(),
            found,
        })
    };
    assert_eq!(p(r#"{"value": "21.5"}"#), wrong("string"));
    assert_eq!(p(r#"{"value": true}"#), wrong("bool"));
    assert_eq!(p(r#"{"value": [1]}"#), wrong("array"));
    assert_eq!(p(r#"{"value": {"v": 1}}"#), wrong("object"));
}

#[test]
fn a_missing_or_null_value_is_missing() {
    let missing = Err(PayloadError::MissingValue {
        field: "value".into(),
    });
    assert_eq!(p(r#"{"temperature": 21.5}"#), missing);
    assert_eq!(p(r#"{"value": null}"#), missing);
    assert_eq!(p("{}"), missing);
}

#[test]
fn an_overflowing_value_in_json_is_non_finite_but_elsewhere_is_harmless() {
    assert_eq!(p(r#"{"value": 1e999}"#), Err(PayloadError::NonFinite));
    assert_eq!(
        p(r#"{"value": -1e400, "ts": 5}"#),
        Err(PayloadError::NonFinite)
    );
    assert_eq!(p(r#"{"other": 1e999, "value": 1}"#), value(1.0));
    assert_eq!(reason(r#"{"value": 1, "ts": 1e999}"#), "bad_timestamp");
}

#[test]
fn broken_json_is_bad_json_with_the_parser_position() {
    for text in [
        r#"{"value": 21.5"#,
        r#"{"value": 21.5,}"#,
        r#"{value: 21.5}"#,
        r#"{"value": 21.5} trailing"#,
        r#"{"value": NaN}"#,
        r#"{"value": -}"#,
    ] {
        match p(text) {
            Err(PayloadError::BadJson { detail }) => assert!(detail.contains("column"), "{detail}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn a_field_given_twice_is_bad_json_not_last_one_wins() {
    match p(r#"{"value": 1, "value": 2}"#) {
        Err(PayloadError::BadJson { detail }) => {
            assert!(detail.contains("duplicate field `value`"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reason(r#"{"value": 1, "ts": 1, "ts": 2}"#), "bad_json");
}

#[test]
fn timestamps_below_1e11_are_seconds_and_above_are_milliseconds() {
    assert_eq!(parse_timestamp(&json!(T0_S)), Ok(T0_S * 1000));
    assert_eq!(parse_timestamp(&json!(T0_S * 1000)), Ok(T0_S * 1000));
    assert_eq!(
        parse_timestamp(&json!(99_999_999_999_i64)),
        Ok(99_999_999_999_000)
    );
    assert_eq!(
        parse_timestamp(&json!(100_000_000_000_i64)),
        Ok(100_000_000_000)
    );
    assert_eq!(parse_timestamp(&json!(0)), Ok(0));
}

#[test]
fn float_timestamps_keep_their_milliseconds() {
    assert_eq!(
        parse_timestamp(&json!(1_732_183_200.25)),
        Ok(T0_S * 1000 + 250)
    );
    // 0.001 s is not exact in binary: rounding, not truncation, gives 1 ms.
    assert_eq!(
        parse_timestamp(&json!(1_732_183_200.001)),
        Ok(T0_S * 1000 + 1)
    );
    assert_eq!(
        parse_timestamp(&json!(1_732_183_200_250.4)),
        Ok(T0_S * 1000 + 250)
    );
}

#[test]
fn rfc3339_timestamps_apply_their_offset() {
    assert_eq!(
        parse_timestamp(&json!("2026-11-21T10:00:00.250+01:00")),
        Ok(1_795_251_600_250)
    );
    assert_eq!(
        parse_timestamp(&json!("2026-11-21T09:00:00.250Z")),
        Ok(1_795_251_600_250)
    );
}

#[test]
fn timestamps_before_1970_or_after_9999_are_bad() {
    for v in [
        json!(-1),
        json!(-1.5),
        json!(MAX_TIMESTAMP_MS + 1),
        json!(1.0e15),
        json!(u64::MAX),
        json!(1_732_183_200_000_000_000_i64), // nanoseconds sent by mistake
        json!("1969-12-31T23:59:59Z"),
    ] {
        assert_eq!(
            parse_timestamp(&v).unwrap_err().reason(),
            "bad_timestamp",
            "{v}"
        );
    }
    assert_eq!(
        parse_timestamp(&json!(MAX_TIMESTAMP_MS)),
        Ok(MAX_TIMESTAMP_MS)
    );
    assert_eq!(
        parse_timestamp(&json!("9999-12-31T23:59:59.999Z")),
        Ok(MAX_TIMESTAMP_MS)
    );
}

#[test]
fn timestamps_without_offset_or_as_digit_strings_or_other_types_are_bad() {
    for v in [
        json!("2026-11-21T10:00:00"),
        json!("1732183200"),
        json!("yesterday"),
        json!(true),
        json!([1]),
        json!({"s": 1}),
        json!(null),
    ] {
        match parse_timestamp(&v) {
            Err(PayloadError::BadTimestamp { detail }) => assert!(!detail.is_empty()),
            other => panic!("{v}: {other:?}"),
        }
    }
}

#[test]
fn a_bad_timestamp_fails_the_whole_payload() {
    assert_eq!(reason(r#"{"value": 1, "ts": "soon"}"#), "bad_timestamp");
}

#[test]
fn each_error_has_its_stable_reason() {
    let all = [
        (PayloadError::TooLarge { len: 2, limit: 1 }, "too_large"),
        (PayloadError::NotUtf8, "not_utf8"),
        (PayloadError::Empty, "empty"),
        (
            PayloadError::NotANumber { text: "x".into() },
            "not_a_number",
        ),
        (PayloadError::BadJson { detail: "x".into() }, "bad_json"),
        (
            PayloadError::MissingValue { field: "v".into() },
            "missing_value",
        ),
        (
            PayloadError::WrongType {
                field: "v".into(),
                found: "string",
            },
            "wrong_type",
        ),
        (PayloadError::NonFinite, "non_finite"),
        (
            PayloadError::BadTimestamp { detail: "x".into() },
            "bad_timestamp",
        ),
    ];
    for (e, r) in all {
        assert_eq!(e.reason(), r, "{e}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_never_give_a_non_finite_value(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(v) = parse(&bytes, &PayloadFormat::default()) {
            prop_assert!(v.value.is_finite());
        }
    }

    #[test]
    fn arbitrary_json_like_text_never_panics(text in r#"[{}\[\]":,0-9a-z .eE+-]{0,40}"#) {
        if let Ok(v) = p(&text) {
            prop_assert!(v.value.is_finite());
        }
    }

    #[test]
    fn every_finite_number_round_trips_exactly_as_plain_text_and_json(
        v in any::<f64>().prop_filter("finite", |v| v.is_finite()),
        ms in 100_000_000_000_i64..=MAX_TIMESTAMP_MS,
    ) {
        prop_assert_eq!(p(&v.to_string()), value(v));
        prop_assert_eq!(p(&format!("{v:e}")), value(v));
        let json = json!({"value": v, "ts": ms}).to_string();
        prop_assert_eq!(p(&json), at(v, ms));
    }
}
