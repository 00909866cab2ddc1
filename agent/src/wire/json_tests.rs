//! The JSON payloads, byte for byte: the `json` format must never change by accident
//! (consumers parse it, and `weir decode` must reproduce it exactly). These strings
//! were produced by Weir 0.1's encoder before the postcard format existed.

#![allow(clippy::unwrap_used)]

use super::Wire;
use super::fixtures;

const PANE: &str = r#"{"v":1,"type":"pane","id":"pi-01/gh/temp/60000-120000","msg_id":"pi-01/gh/temp/60000-120000#r1","device":"pi-01","sensor":"gh","metric":"temp","window_start":60000,"window_end":120000,"revision":1,"timing":"late","final":false,"count":3,"sum":63.5,"min":20.25,"max":22.0,"mean":21.166666666666668,"stddev":0.7168604389202189,"first":21.25,"last":20.25,"emitted_at":130000}"#;
const PANE_QUANTILES: &str = r#"{"v":1,"type":"pane","id":"pi-01/gh/temp/60000-120000","msg_id":"pi-01/gh/temp/60000-120000#r1","device":"pi-01","sensor":"gh","metric":"temp","window_start":60000,"window_end":120000,"revision":1,"timing":"late","final":false,"count":3,"sum":63.5,"min":20.25,"max":22.0,"mean":21.166666666666668,"stddev":0.7168604389202189,"first":21.25,"last":20.25,"p50":21.25,"p90":22.0,"p99":22.0,"emitted_at":130000}"#;
const ALERT_RAISED: &str = r#"{"baseline":20.125,"detector":"too-hot","device":"pi-01","emitted_at":130000,"id":"pi-01/gh/temp/too-hot/90000","kind":"zscore","metric":"temp","msg_id":"pi-01/gh/temp/too-hot/90000#raised","raised_ts":90000,"reason":"value 41.5 above high 35","sensor":"gh","severity":"critical","state":"raised","threshold":35.0,"ts":95000,"type":"alert","v":1,"value":41.5}"#;
const ALERT_CLEARED: &str = r#"{"baseline":null,"detector":"too-hot","device":"pi-01","emitted_at":130000,"id":"pi-01/gh/temp/too-hot/90000","kind":"threshold","metric":"temp","msg_id":"pi-01/gh/temp/too-hot/90000#cleared","raised_ts":90000,"reason":"value 41.5 above high 35","sensor":"gh","severity":"critical","state":"cleared","threshold":35.0,"ts":95000,"type":"alert","v":1,"value":41.5}"#;
const LATE: &str = r#"{"device":"pi-01","emitted_at":130000,"late_by_ms":1500,"metric":"temp","msg_id":"pi-01/late/b007/1","sensor":"gh","ts":10000,"ts_source":"arrival","type":"late","v":1,"value":-3.5,"watermark":200000}"#;
const DEAD_LETTER: &str = r#"{"detail":"\"warm\" is not a number","device":"pi-01","emitted_at":130000,"msg_id":"pi-01/dl/b007/2","payload":"warm","reason":"not_a_number","received_at":123456,"source":"sensors/gh/temp","type":"deadletter","v":1}"#;

fn text(payload: &[u8]) -> &str {
    std::str::from_utf8(payload).unwrap()
}

#[test]
fn json_payloads_of_every_kind_are_byte_identical_to_weir_0_1() {
    let mut w = Wire::with_boot_id("pi-01", "weir/pi-01", "b007");
    assert_eq!(text(&w.pane(&fixtures::pane(false), 130_000).payload), PANE);
    assert_eq!(
        text(&w.pane(&fixtures::pane(true), 130_000).payload),
        PANE_QUANTILES
    );
    assert_eq!(
        text(&w.alert(&fixtures::alert(true), 130_000).payload),
        ALERT_RAISED
    );
    assert_eq!(
        text(&w.alert(&fixtures::alert(false), 130_000).payload),
        ALERT_CLEARED
    );
    assert_eq!(text(&w.late(&fixtures::late(), 130_000).payload), LATE);
    assert_eq!(
        text(&w.dead_letter(&fixtures::dead_letter(), 130_000).payload),
        DEAD_LETTER
    );
}
