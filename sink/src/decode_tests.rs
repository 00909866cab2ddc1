#![allow(clippy::unwrap_used)]

use weir::wire::Message;
use weir::wire::body::{PaneBody, Timing};

use super::*;

const PANE: &str = r#"{"v":1,"type":"pane","id":"pi-01/gh/temp/60000-120000","msg_id":"pi-01/gh/temp/60000-120000#r1","device":"pi-01","sensor":"gh","metric":"temp","window_start":60000,"window_end":120000,"revision":1,"timing":"late","final":false,"count":3,"sum":63.5,"min":20.25,"max":22.0,"mean":21.166666666666668,"stddev":0.7168604389202189,"first":21.25,"last":20.25,"emitted_at":130000}"#;

const ALERT: &str = r#"{"v":1,"type":"alert","id":"pi-01/gh/temp/too-hot/90000","msg_id":"pi-01/gh/temp/too-hot/90000#cleared","device":"pi-01","sensor":"gh","metric":"temp","detector":"too-hot","kind":"threshold","state":"cleared","severity":"critical","value":21.0,"baseline":null,"threshold":35.0,"reason":"back below 35","ts":99000,"raised_ts":90000,"emitted_at":130000}"#;

#[test]
fn a_json_pane_is_read_field_by_field() {
    let Record::Pane(p) = decode("weir/pi-01/agg/gh/temp", PANE.as_bytes()).unwrap() else {
        panic!("not a pane")
    };
    assert_eq!(p.id, "pi-01/gh/temp/60000-120000");
    assert_eq!(
        (p.window_start, p.window_end, p.revision),
        (60000, 120000, 1)
    );
    assert!(!p.is_final);
    assert_eq!(p.count, 3);
    assert_eq!(p.p50, None);
}

#[test]
fn a_postcard_pane_reads_the_same_as_its_json() {
    let body = PaneBody {
        device: "pi-01",
        sensor: "gh",
        metric: "temp",
        window_start: 60000,
        window_end: 120000,
        revision: 1,
        timing: Timing::Late,
        is_final: false,
        count: 3,
        sum: 63.5,
        min: 20.25,
        max: 22.0,
        mean: 21.166666666666668,
        stddev: 0.7168604389202189,
        first: 21.25,
        last: 20.25,
        p50: None,
        p90: None,
        p99: None,
        emitted_at: 130000,
    };
    let bytes = weir::wire::postcard::encode(&Message::Pane(body));
    assert_eq!(
        decode("t", &bytes).unwrap(),
        decode("t", PANE.as_bytes()).unwrap()
    );
}

#[test]
fn an_alert_keeps_its_state_and_raised_time() {
    let Record::Alert(a) = decode("t", ALERT.as_bytes()).unwrap() else {
        panic!("not an alert")
    };
    assert_eq!(a.state, AlertState::Cleared);
    assert_eq!((a.ts, a.raised_ts), (99000, 90000));
    assert_eq!(a.baseline, None);
}

#[test]
fn a_status_and_a_last_will_are_read() {
    let online = r#"{"v":1,"type":"status","device":"pi-01","state":"online","version":"0.1.0","started_at":5000,"counters":{}}"#;
    let Record::Status(s) = decode("t", online.as_bytes()).unwrap() else {
        panic!("not a status")
    };
    assert_eq!((s.state.as_str(), s.started_at), ("online", Some(5000)));
    assert_eq!(s.json, online);
    let will = r#"{"v":1,"type":"status","device":"pi-01","state":"offline"}"#;
    let Record::Status(s) = decode("t", will.as_bytes()).unwrap() else {
        panic!("not a status")
    };
    assert_eq!((s.state.as_str(), s.version), ("offline", None));
}

#[test]
fn each_kind_of_bad_message_is_rejected_with_its_own_reason() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "bad_json"),
        (b"{not json", "bad_json"),
        (b"[1,2]", "bad_postcard"),
        (b"\x01\x09rest", "bad_postcard"),
        (br#"{"type":"pane"}"#, "unknown_version"),
        (br#"{"v":2,"type":"pane"}"#, "unknown_version"),
        (br#"{"v":1}"#, "unknown_type"),
        (br#"{"v":1,"type":"gauge"}"#, "unknown_type"),
        (br#"{"v":1,"type":"pane","id":"x"}"#, "bad_fields"),
        (br#"{"v":1,"type":"late","msg_id":"m","device":"d","sensor":"s","metric":"m","value":"hot","ts":1,"ts_source":"event","watermark":1,"late_by_ms":1,"emitted_at":1}"#, "bad_fields"),
    ];
    for (payload, reason) in cases {
        let r = decode("weir/d/x", payload).unwrap_err();
        assert_eq!(
            r.reason,
            *reason,
            "{:?}: {}",
            String::from_utf8_lossy(payload),
            r.detail
        );
        assert!(r.detail.contains("weir/d/x"), "{}", r.detail);
    }
}

#[test]
fn a_pane_with_a_negative_revision_is_rejected_not_wrapped() {
    let bad = PANE.replace("\"revision\":1", "\"revision\":-1");
    assert_eq!(
        decode("t", bad.as_bytes()).unwrap_err().reason,
        "bad_fields"
    );
}
