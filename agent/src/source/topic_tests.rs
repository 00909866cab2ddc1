#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

fn m(filter: &str) -> TopicMap {
    TopicMap::new(filter, "s", "m").unwrap()
}

fn matches(filter: &str, topic: &str) -> bool {
    m(filter).map(topic).is_some()
}

fn pair(sensor: &str, metric: &str) -> Option<(String, String)> {
    Some((sensor.to_owned(), metric.to_owned()))
}

#[test]
fn a_plus_matches_exactly_one_level() {
    assert!(matches("sensors/+/+", "sensors/kitchen/temperature"));
    assert!(!matches("sensors/+/+", "sensors/kitchen"));
    assert!(!matches("sensors/+/+", "sensors/kitchen/temperature/raw"));
    assert!(!matches("sensors/+/+", "other/kitchen/temperature"));
}

#[test]
fn a_plus_matches_an_empty_level() {
    assert!(matches("a/+/b", "a//b"));
    assert!(matches("+/b", "/b"));
}

#[test]
fn a_hash_matches_the_parent_and_every_descendant() {
    assert!(matches("a/#", "a"));
    assert!(matches("a/#", "a/b"));
    assert!(matches("a/#", "a/b/c/d"));
    assert!(!matches("a/#", "b/a"));
    assert!(!matches("a/#", "ab"));
}

#[test]
fn a_lone_hash_matches_everything_except_dollar_topics() {
    assert!(matches("#", "a"));
    assert!(matches("#", "a/b/c"));
    assert!(matches("#", "/"));
    assert!(!matches("#", "$SYS/broker/uptime"));
}

#[test]
fn an_exact_filter_matches_only_that_topic() {
    assert!(matches("home/kitchen/temp", "home/kitchen/temp"));
    assert!(!matches("home/kitchen/temp", "home/kitchen/temp/"));
    assert!(!matches("home/kitchen/temp", "home/kitchen"));
    assert!(!matches("home/kitchen/temp", "Home/kitchen/temp"));
}

#[test]
fn wildcards_at_the_first_level_skip_dollar_topics_but_literals_match_them() {
    assert!(!matches("+/broker/uptime", "$SYS/broker/uptime"));
    assert!(matches("$SYS/#", "$SYS/broker/uptime"));
    assert!(matches("$SYS/+/uptime", "$SYS/broker/uptime"));
}

#[test]
fn empty_topics_and_topics_with_wildcards_are_never_matched() {
    assert!(!matches("#", ""));
    assert!(!matches("#", "a/+"));
    assert!(!matches("#", "a/#"));
    assert!(!matches("a/+", "a/+"));
}

#[test]
fn captured_levels_fill_the_templates() {
    let t = TopicMap::new("sensors/+/+", "{2}", "{3}").unwrap();
    assert_eq!(
        t.map("sensors/kitchen/temperature"),
        pair("kitchen", "temperature")
    );
}

#[test]
fn minus_one_is_the_last_level_however_deep_the_topic() {
    let t = TopicMap::new("zigbee2mqtt/#", "{2}", "{-1}").unwrap();
    assert_eq!(
        t.map("zigbee2mqtt/porch/sensor/humidity"),
        pair("porch", "humidity")
    );
    assert_eq!(t.map("zigbee2mqtt/porch"), pair("porch", "porch"));
    let t = TopicMap::new("a/+/+", "{-2}", "{-3}").unwrap();
    assert_eq!(t.map("a/b/c"), pair("b", "a"));
}

#[test]
fn fixed_text_around_placeholders_is_kept() {
    let t = TopicMap::new("shellies/+/relay/+/power", "shelly-{2}", "relay{4}_power").unwrap();
    assert_eq!(
        t.map("shellies/plug1/relay/0/power"),
        pair("shelly-plug1", "relay0_power")
    );
    let t = TopicMap::new("tele/+/SENSOR", "{2}", "temperature").unwrap();
    assert_eq!(
        t.map("tele/bathroom/SENSOR"),
        pair("bathroom", "temperature")
    );
    assert_eq!(t.filter(), "tele/+/SENSOR");
}

#[test]
fn a_level_the_topic_does_not_have_is_not_mapped() {
    let t = TopicMap::new("a/#", "{2}", "{3}").unwrap();
    assert_eq!(t.map("a/b/c"), pair("b", "c"));
    assert_eq!(t.map("a/b"), None);
    let t = TopicMap::new("a/#", "{-3}", "m").unwrap();
    assert_eq!(t.map("a/b"), None);
}

#[test]
fn an_empty_capture_that_empties_a_name_is_not_mapped() {
    let t = TopicMap::new("a/+/b", "{2}", "m").unwrap();
    assert_eq!(t.map("a//b"), None);
    let t = TopicMap::new("a/+/b", "x{2}", "m").unwrap();
    assert_eq!(t.map("a//b"), pair("x", "m"));
}

#[test]
fn malformed_filters_are_refused() {
    assert_eq!(TopicMap::new("", "s", "m"), Err(TopicError::EmptyFilter));
    assert_eq!(
        TopicMap::new("a/#/b", "s", "m"),
        Err(TopicError::HashNotLast {
            filter: "a/#/b".into()
        })
    );
    for (filter, level) in [
        ("a/b+/c", "b+"),
        ("a/#b", "#b"),
        ("a/++", "++"),
        ("+x", "+x"),
    ] {
        assert_eq!(
            TopicMap::new(filter, "s", "m"),
            Err(TopicError::WildcardInsideLevel {
                filter: filter.into(),
                level: level.into()
            })
        );
    }
    assert!(matches!(
        TopicMap::new("a/\0", "s", "m"),
        Err(TopicError::NulInFilter { .. })
    ));
    let long = "a".repeat(65_536);
    assert_eq!(
        TopicMap::new(&long, "s", "m"),
        Err(TopicError::FilterTooLong { len: 65_536 })
    );
}

#[test]
fn unknown_or_malformed_placeholders_are_refused() {
    for (template, placeholder) in [
        ("{x}", "{x}"),
        ("{0}", "{0}"),
        ("{-0}", "{-0}"),
        ("{}", "{}"),
        ("a{+1}", "{+1}"),
        ("{ 1}", "{ 1}"),
        ("{sensor}", "{sensor}"),
    ] {
        assert_eq!(
            TopicMap::new("a/+", "s", template),
            Err(TopicError::UnknownPlaceholder {
                which: "metric",
                placeholder: placeholder.into()
            }),
            "{template}"
        );
    }
    for template in ["{2", "2}", "a}{1}", "{1}}"] {
        assert_eq!(
            TopicMap::new("a/+", template, "m"),
            Err(TopicError::UnbalancedBrace {
                which: "sensor",
                template: template.into()
            }),
            "{template}"
        );
    }
}

#[test]
fn empty_templates_and_names_that_would_break_upstream_topics_are_refused() {
    assert_eq!(
        TopicMap::new("a/+", "", "m"),
        Err(TopicError::EmptyTemplate { which: "sensor" })
    );
    for (template, found) in [("a/b", '/'), ("{2}+", '+'), ("#", '#')] {
        assert_eq!(
            TopicMap::new("a/+", "s", template),
            Err(TopicError::ForbiddenChar {
                which: "metric",
                template: template.into(),
                found
            })
        );
    }
}

#[test]
fn a_level_beyond_a_fixed_length_filter_is_refused_but_not_under_a_hash() {
    assert_eq!(
        TopicMap::new("a/+", "{3}", "m"),
        Err(TopicError::LevelOutOfRange {
            which: "sensor",
            placeholder: "{3}".into(),
            filter: "a/+".into(),
            levels: 2
        })
    );
    assert!(matches!(
        TopicMap::new("a/+", "s", "{-3}"),
        Err(TopicError::LevelOutOfRange { .. })
    ));
    assert!(TopicMap::new("a/+", "{2}", "{-2}").is_ok());
    assert!(TopicMap::new("a/#", "{7}", "{-7}").is_ok());
}

#[test]
fn every_error_message_shows_a_valid_example() {
    let errors = [
        TopicMap::new("", "s", "m"),
        TopicMap::new("a/#/b", "s", "m"),
        TopicMap::new("a/b+", "s", "m"),
        TopicMap::new("a/\0", "s", "m"),
        TopicMap::new("a", "", "m"),
        TopicMap::new("a", "{x}", "m"),
        TopicMap::new("a", "{1", "m"),
        TopicMap::new("a", "a/b", "m"),
        TopicMap::new("a", "{2}", "m"),
    ];
    for e in errors {
        let msg = e.unwrap_err().to_string();
        assert!(msg.contains("e.g.") || msg.contains("like"), "{msg}");
    }
    let msg = TopicMap::new("a/+", "{3}", "m").unwrap_err().to_string();
    assert!(msg.contains("`{2}`") && msg.contains("`{-1}`"), "{msg}");
}

fn arb_levels() -> impl Strategy<Value = Vec<String>> {
    // Levels may be empty, but not the whole topic (MQTT forbids it); none starts
    // with `$`, so wildcards apply.
    prop::collection::vec("[a-z0-9 _.-]{0,6}", 1..6).prop_filter("a topic is not empty", |levels| {
        levels.len() > 1 || !levels[0].is_empty()
    })
}

proptest! {
    #[test]
    fn a_filter_made_from_a_topic_by_wildcards_matches_it_and_captures_its_levels(
        levels in arb_levels(),
        plus_mask in any::<u8>(),
        hash_from in any::<prop::sample::Index>(),
    ) {
        let topic = levels.join("/");
        let mut filter: Vec<&str> = levels
            .iter()
            .enumerate()
            .map(|(i, l)| if plus_mask & (1 << i) != 0 { "+" } else { l.as_str() })
            .collect();
        let cut = hash_from.index(levels.len() + 1);
        filter.truncate(cut);
        if cut < levels.len() || plus_mask & 0x80 != 0 {
            filter.push("#");
        }
        let filter = filter.join("/");
        let n = levels.len();
        let t = TopicMap::new(&filter, "x{1}", "y{-1}").unwrap();
        prop_assert_eq!(
            t.map(&topic),
            Some((format!("x{}", levels[0]), format!("y{}", levels[n - 1]))),
            "filter {} topic {}", filter, topic
        );
    }

    #[test]
    fn a_topic_with_a_different_level_count_never_matches_a_filter_without_hash(
        levels in arb_levels(),
        extra in "[a-z]{1,3}",
    ) {
        let filter = vec!["+"; levels.len()].join("/");
        let t = TopicMap::new(&filter, "s", "m").unwrap();
        let topic = levels.join("/");
        let longer = format!("{topic}/{extra}");
        prop_assert!(t.map(&topic).is_some());
        prop_assert!(t.map(&longer).is_none());
        if levels.len() > 1 {
            let shorter = levels[..levels.len() - 1].join("/");
            prop_assert!(t.map(&shorter).is_none());
        }
    }
}
