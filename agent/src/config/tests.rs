use super::*;

fn invalid(text: &str) -> Invalid {
    match Config::parse(text, Some(Path::new("weir.toml"))) {
        Err(ConfigError::Invalid(i)) => i,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn syntax(text: &str) -> SyntaxError {
    match Config::parse(text, Some(Path::new("weir.toml"))) {
        Err(ConfigError::Syntax(s)) => s,
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

const MINIMAL: &str = "[agent]\ndevice = \"d1\"\n\n[[sim]]\nname = \"s\"\n";

#[test]
fn the_example_config_is_valid_and_keeps_its_values() {
    let c = Config::parse(EXAMPLE, None).unwrap();
    assert_eq!(c.device, "pi-greenhouse-01");
    assert_eq!(c.uplink.topic_prefix, "weir/pi-greenhouse-01");
    assert_eq!(c.uplink.client_id, "weir-pi-greenhouse-01");
    assert_eq!(c.engine.max_out_of_orderness_ms, 5_000);
    assert_eq!(
        c.engine.window,
        WindowSpec::Tumbling {
            size_ms: 60_000,
            offset_ms: 0
        }
    );
    assert_eq!(c.detectors.len(), 3);
    assert_eq!(c.devices.i2c.len(), 1);
    assert_eq!(c.devices.i2c[0].address, 0x76);
    assert!(c.devices.i2c[0].sim.is_some());
    assert_eq!(c.sims.len(), 1);
    assert_eq!(c.sims[0].spec.anomalies.len(), 1);
    assert_eq!(c.outbox.max_bytes, 64 << 20);
    assert_eq!(c.outbox.path, PathBuf::from("/var/lib/weir/outbox.db"));
    assert_eq!(c.ingest.as_ref().unwrap().topics.len(), 1);
}

use crate::engine::WindowSpec;

#[test]
fn a_minimal_config_gets_the_documented_defaults() {
    let c = Config::parse(MINIMAL, None).unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/weir"));
    assert_eq!(c.engine.allowed_lateness_ms, 30_000);
    assert_eq!(c.uplink.port, 1883);
    assert_eq!(c.uplink.reconnect_max, Duration::from_secs(60));
    assert_eq!(c.sims[0].metric, "value");
    assert_eq!(c.sims[0].when_full, WhenFull::Block);
    assert!(c.ingest.is_none());
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let e = syntax("[agent]\ndevice = \"d\"\n[engine]\nmax_out_of_order = \"5s\"\n");
    assert_eq!(e.line, Some(4));
    assert!(e.message.contains("max_out_of_order"), "{}", e.message);
    assert!(e.to_string().starts_with("weir.toml:4: "), "{e}");
}

#[test]
fn a_value_of_the_wrong_type_is_a_syntax_error_on_its_line() {
    let e = syntax("[agent]\nchannel_capacity = \"big\"\n");
    assert_eq!(e.line, Some(2));
}

#[test]
fn a_bad_duration_names_the_key_the_line_and_the_fix() {
    let e = invalid(&format!(
        "{MINIMAL}\n[engine]\nallowed_lateness = \"ten seconds\"\n"
    ));
    assert_eq!(e.key, "engine.allowed_lateness");
    assert_eq!(e.line, Some(8));
    assert!(e.fix.contains("\"10s\""), "{}", e.fix);
    let shown = e.to_string();
    assert!(
        shown.starts_with("weir.toml:8: engine.allowed_lateness: "),
        "{shown}"
    );
}

#[test]
fn a_zero_window_size_is_refused() {
    let e = invalid(&format!("{MINIMAL}\n[engine.window]\nsize = \"0s\"\n"));
    assert_eq!(e.key, "engine.window.size");
    assert_eq!(e.line, Some(8));
}

#[test]
fn a_detector_without_kind_points_at_that_detector() {
    let text = format!(
        "{MINIMAL}\n[[detector]]\nname = \"a\"\nkind = \"threshold\"\nhigh = 1.0\n\n[[detector]]\nname = \"b\"\n"
    );
    let e = invalid(&text);
    assert_eq!(e.key, "detector[1].kind");
    assert_eq!(e.line, Some(12), "falls back to the [[detector]] header");
}

#[test]
fn duplicate_detector_names_are_refused() {
    let text = format!(
        "{MINIMAL}\n[[detector]]\nname = \"a\"\nkind = \"threshold\"\nhigh = 1.0\n[[detector]]\nname = \"a\"\nkind = \"threshold\"\nhigh = 2.0\n"
    );
    assert_eq!(invalid(&text).key, "detector[1].name");
}

#[test]
fn a_threshold_detector_rule_violation_is_reported_by_the_detector_module() {
    let text = format!(
        "{MINIMAL}\n[[detector]]\nname = \"a\"\nkind = \"threshold\"\nhigh = 1.0\nlow = 2.0\n"
    );
    let e = invalid(&text);
    assert!(e.key.starts_with("detector[0]."), "{}", e.key);
}

#[test]
fn a_device_name_that_would_break_topics_is_refused() {
    let e = invalid("[agent]\ndevice = \"a/b\"\n[[sim]]\nname = \"s\"\n");
    assert_eq!(e.key, "agent.device");
    assert_eq!(e.line, Some(2));
}

#[test]
fn a_config_without_sources_is_refused() {
    let e = invalid("[agent]\ndevice = \"d\"\n");
    assert!(e.problem.contains("no sources"), "{}", e.problem);
}

#[test]
fn outbox_sizes_accept_units_and_refuse_less_than_one_mebibyte() {
    let c = Config::parse(&format!("{MINIMAL}[outbox]\nmax_bytes = \"2MiB\"\n"), None).unwrap();
    assert_eq!(c.outbox.max_bytes, 2 << 20);
    let c = Config::parse(&format!("{MINIMAL}[outbox]\nmax_bytes = 3000000\n"), None).unwrap();
    assert_eq!(c.outbox.max_bytes, 3_000_000);
    assert_eq!(
        invalid(&format!("{MINIMAL}[outbox]\nmax_bytes = \"10KiB\"\n")).key,
        "outbox.max_bytes"
    );
    assert_eq!(
        invalid(&format!("{MINIMAL}[outbox]\nmax_bytes = \"lots\"\n")).key,
        "outbox.max_bytes"
    );
}

#[test]
fn an_invalid_topic_filter_is_refused_with_its_position() {
    let text = format!("{MINIMAL}[ingest]\n[[ingest.topic]]\nfilter = \"a/#/b\"\n");
    let e = invalid(&text);
    assert_eq!(e.key, "ingest.topic[0].filter");
    assert_eq!(e.line, Some(8));
}

#[test]
fn sim_drift_is_converted_to_per_sample() {
    let c = Config::parse(
        "[[sim]]\nname = \"s\"\ninterval = \"30m\"\ndrift_per_hour = 2.0\n",
        None,
    )
    .unwrap();
    assert!((c.sims[0].spec.drift_per_sample - 1.0).abs() < 1e-12);
}

#[test]
fn a_spike_without_magnitude_is_refused() {
    let e = invalid("[[sim]]\nname = \"s\"\n[[sim.anomaly]]\nkind = \"spike\"\nat = 3\n");
    assert_eq!(e.key, "sim[0].anomaly[0].magnitude");
    assert_eq!(e.line, Some(3));
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let e = Config::load(Path::new("/nonexistent/weir.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/weir.toml"), "{e}");
}

#[test]
fn an_i2c_sensor_gets_its_chips_defaults_and_a_simulated_one_its_faults() {
    let c = Config::parse(
        "[agent]\ndevice = \"d\"\n[[i2c]]\nname = \"a\"\nchip = \"sht3x\"\n\
         [[i2c]]\nname = \"b\"\nchip = \"bme280\"\nsim = true\n\
         [[i2c.sim_fault]]\nkind = \"absent\"\nat = 5\nlength = 2\n",
        None,
    )
    .unwrap();
    let a = &c.devices.i2c[0];
    assert_eq!(
        (a.address, a.bus.as_str(), a.poll.fail_after),
        (0x44, "/dev/i2c-1", 3)
    );
    assert_eq!(a.chip.metrics(), ["temperature", "humidity"]);
    let sim = c.devices.i2c[1].sim.as_ref().unwrap();
    assert_eq!(sim.faults.len(), 1);
    assert_eq!(sim.specs.len(), 3);
}

#[test]
fn a_bad_sensor_section_names_its_key_and_line() {
    let e = invalid("[agent]\ndevice = \"d\"\n[[i2c]]\nname = \"a\"\nchip = \"bme999\"\n");
    assert_eq!((e.key.as_str(), e.line), ("i2c[0].chip", Some(5)));
    let e = invalid("[agent]\ndevice = \"d\"\n[[gpio]]\nname = \"door\"\n");
    assert_eq!(e.key, "gpio[0].line");
    let e = invalid(
        "[agent]\ndevice = \"d\"\n[[i2c]]\nname = \"a\"\nchip = \"bme280\"\n[[onewire]]\nname = \"a\"\nid = \"28-1\"\n",
    );
    assert!(e.problem.contains("used twice"), "{}", e.problem);
    let e = invalid(
        "[agent]\ndevice = \"d\"\n[[i2c]]\nname = \"a\"\nchip = \"bme280\"\nsim = true\nsim_base = { voltage = 3.0 }\n",
    );
    assert_eq!(e.key, "i2c[0].sim_base");
}

#[test]
fn gpio_and_onewire_sections_get_their_defaults() {
    let c = Config::parse(
        "[agent]\ndevice = \"d\"\n[[gpio]]\nname = \"rain\"\nline = 27\nmode = \"counter\"\n\
         [[onewire]]\nname = \"tank\"\nid = \"28-0316a2796bff\"\n",
        None,
    )
    .unwrap();
    let g = &c.devices.gpio[0];
    assert_eq!(g.metric, "rate");
    assert_eq!(g.debounce, Duration::from_millis(5));
    let o = &c.devices.onewire[0];
    assert_eq!(
        (o.metric.as_str(), o.poll.interval),
        ("temperature", Duration::from_secs(30))
    );
}
