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
    let kinds: Vec<&str> = c.detectors.iter().map(|d| d.kind.name()).collect();
    assert_eq!(kinds, ["threshold", "auto", "silence", "flatline"]);
    // The example shows every engine default.
    assert_eq!(c.engine, crate::engine::EngineConfig::default());
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
    assert_eq!(c.control_socket(), PathBuf::from("/run/weir/control.sock"));
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
    assert!(
        e.to_string()
            .starts_with("weir.toml:4: engine.max_out_of_order: unknown field"),
        "{e}"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_a_syntax_error_on_its_line() {
    let e = syntax("[agent]\nchannel_capacity = \"big\"\n");
    assert_eq!(e.line, Some(2));
    assert_eq!(e.key.as_deref(), Some("agent.channel_capacity"));
    assert!(
        e.to_string()
            .starts_with("weir.toml:2: agent.channel_capacity: invalid type"),
        "{e}"
    );
}

#[test]
fn a_wrong_type_in_an_array_table_names_its_index() {
    let e = syntax(&format!("{MINIMAL}\n[[sim]]\nname = \"t\"\nperiod = 5\n"));
    assert_eq!(e.line, Some(9));
    assert_eq!(e.key.as_deref(), Some("sim[1].period"), "{e}");
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
    // The parser's byte offsets ("expected number at 0") are not repeated to the reader.
    assert_eq!(e.problem, "\"ten seconds\" is not a duration");
}

#[test]
fn a_duration_with_an_unknown_unit_names_the_unit() {
    let e = invalid(&format!(
        "{MINIMAL}\n[engine]\nallowed_lateness = \"10x\"\n"
    ));
    assert_eq!(e.problem, "\"10x\" is not a duration (no unit \"x\")");
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
fn a_password_file_is_read_without_its_trailing_newline_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let text = format!(
        "{MINIMAL}[uplink]\nusername = \"u\"\npassword_file = \"{}\"\n",
        pw.display()
    );
    let c = Config::parse(&text, None).unwrap();
    let cred = c.uplink.credentials.as_ref().unwrap();
    assert_eq!(cred.username, "u");
    assert_eq!(cred.password.expose(), "s3cret");
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "the password must not appear in debug output"
    );
}

#[test]
fn an_unset_password_variable_is_named() {
    let text = format!(
        "{MINIMAL}[uplink]\nusername = \"u\"\npassword_env = \"WEIR_TEST_SURELY_UNSET_VAR\"\n"
    );
    let e = invalid(&text);
    assert_eq!(e.key, "uplink.password_env");
    assert!(
        e.problem.contains("WEIR_TEST_SURELY_UNSET_VAR"),
        "{}",
        e.problem
    );
}

#[test]
fn a_password_without_username_or_with_two_sources_is_refused() {
    let text = format!("{MINIMAL}[uplink]\npassword_env = \"HOME\"\n");
    assert_eq!(invalid(&text).key, "uplink.username");
    let text = format!(
        "{MINIMAL}[uplink]\nusername = \"u\"\npassword_env = \"HOME\"\npassword_file = \"/x\"\n"
    );
    assert_eq!(invalid(&text).key, "uplink.password_env");
}

#[test]
fn tls_needs_a_readable_ca_and_a_key_with_its_certificate() {
    assert_eq!(
        invalid(&format!("{MINIMAL}[uplink.tls]\ncert_file = \"/x\"\n")).key,
        "uplink.tls"
    );
    let e = invalid(&format!(
        "{MINIMAL}[uplink.tls]\nca_file = \"/nonexistent/ca.crt\"\n"
    ));
    assert_eq!(e.key, "uplink.tls.ca_file");
    assert!(e.problem.contains("/nonexistent/ca.crt"), "{}", e.problem);
    let e = invalid(&format!(
        "{MINIMAL}[uplink.tls]\nca_file = \"/nonexistent/ca.crt\"\ncert_file = \"/c\"\n"
    ));
    assert_eq!(e.key, "uplink.tls.key_file");
}

#[test]
fn outbox_ttls_default_to_keeping_alerts_and_accept_never() {
    let c = Config::parse(MINIMAL, None).unwrap();
    assert_eq!(
        c.outbox_ttl,
        [
            None,
            Some(Duration::from_secs(7 * 86_400)),
            Some(Duration::from_secs(86_400))
        ]
    );
    assert_eq!(c.uplink.max_rate, 1000);
    let c = Config::parse(
        &format!("{MINIMAL}[outbox.ttl]\nalert = \"30d\"\ndiagnostic = \"never\"\n"),
        None,
    )
    .unwrap();
    assert_eq!(c.outbox_ttl[0], Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(c.outbox_ttl[2], None);
    assert_eq!(
        invalid(&format!("{MINIMAL}[outbox.ttl]\naggregate = \"0s\"\n")).key,
        "outbox.ttl.aggregate"
    );
}

#[test]
fn hopping_and_session_windows_and_the_global_scope_are_read() {
    let c = Config::parse(
        &format!(
            "{MINIMAL}[engine]\nscope = \"global\"\nquantiles = true\nlate_fire_delay = \"2s\"\nmax_backfill = \"1d\"\nidle_timeout = \"off\"\n[engine.window]\nkind = \"hopping\"\nsize = \"1m\"\nslide = \"15s\"\n"
        ),
        None,
    )
    .unwrap();
    assert_eq!(
        c.engine.window,
        WindowSpec::Hopping {
            size_ms: 60_000,
            slide_ms: 15_000,
            offset_ms: 0
        }
    );
    assert_eq!(c.engine.scope, crate::engine::Scope::Global);
    assert!(c.engine.quantiles);
    assert_eq!(c.engine.late_fire_delay_ms, 2_000);
    assert_eq!(c.engine.max_backfill_ms, Some(86_400_000));
    assert_eq!(c.engine.idle_timeout_ms, None);
    let c = Config::parse(
        &format!("{MINIMAL}[engine.window]\nkind = \"session\"\ngap = \"10s\"\n"),
        None,
    )
    .unwrap();
    assert_eq!(
        c.engine.window,
        WindowSpec::Session {
            gap_ms: 10_000,
            max_length_ms: 3_600_000,
            offset_ms: 0
        }
    );
}

#[test]
fn a_hopping_window_over_the_window_limit_names_the_slide_and_the_fix() {
    let e = invalid(&format!(
        "{MINIMAL}[engine]\nmax_windows_per_key = 4\n[engine.window]\nkind = \"hopping\"\nsize = \"60s\"\nslide = \"10s\"\n"
    ));
    assert_eq!(e.key, "engine.window.slide");
    assert!(e.problem.contains("in 6 windows"), "{}", e.problem);
    assert!(e.fix.contains("max_windows_per_key"), "{}", e.fix);
}

#[test]
fn a_key_that_does_not_apply_to_the_window_kind_is_refused() {
    let e = invalid(&format!(
        "{MINIMAL}[engine.window]\nkind = \"session\"\nsize = \"60s\"\n"
    ));
    assert_eq!(e.key, "engine.window.size");
    assert!(e.fix.contains("gap"), "{}", e.fix);
    let e = invalid(&format!(
        "{MINIMAL}[engine.window]\nkind = \"hopping\"\nsize = \"60s\"\n"
    ));
    assert_eq!(e.key, "engine.window.slide");
}

#[test]
fn a_silence_detector_needs_an_idle_timeout() {
    let e = invalid(&format!(
        "{MINIMAL}[engine]\nidle_timeout = \"off\"\n[[detector]]\nname = \"q\"\nkind = \"silence\"\n"
    ));
    assert_eq!(e.key, "detector[0].kind");
    assert!(e.fix.contains("idle_timeout"), "{}", e.fix);
    let c = Config::parse(
        &format!("{MINIMAL}[[detector]]\nname = \"q\"\nkind = \"silence\"\n"),
        None,
    )
    .unwrap();
    assert_eq!(c.detectors[0].kind, crate::detect::DetectorKind::Silence);
}

#[test]
fn an_unknown_scope_is_refused_with_both_choices() {
    let e = invalid(&format!("{MINIMAL}[engine]\nscope = \"fleet\"\n"));
    assert_eq!(e.key, "engine.scope");
    assert!(e.fix.contains("per_key") && e.fix.contains("global"));
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

#[test]
fn the_uplink_format_defaults_to_json_and_a_bad_one_names_its_line_and_the_choices() {
    assert_eq!(
        Config::parse(MINIMAL, None).unwrap().uplink.format,
        crate::wire::Format::Json
    );
    let c = Config::parse(&format!("{MINIMAL}[uplink]\nformat = \"postcard\"\n"), None).unwrap();
    assert_eq!(c.uplink.format, crate::wire::Format::Postcard);
    let e = invalid(&format!(
        "{MINIMAL}[uplink]\nport = 1883\nformat = \"cbor\"\n"
    ));
    assert_eq!(e.key, "uplink.format");
    assert_eq!(e.line, Some(8));
    assert!(e.problem.contains("cbor"), "{}", e.problem);
    assert!(
        e.fix.contains("json") && e.fix.contains("postcard"),
        "{}",
        e.fix
    );
}

#[test]
fn a_max_payload_bytes_above_what_ingest_can_read_whole_is_refused_with_the_limit() {
    let base = format!(
        "{MINIMAL}[ingest]\nhost = \"127.0.0.1\"\n[[ingest.topic]]\nfilter = \"a/+\"\nsensor = \"{{2}}\"\nmetric = \"v\"\n"
    );
    let ok = base.replace("[ingest]\n", "[ingest]\nmax_payload_bytes = 983032\n");
    assert!(Config::parse(&ok, None).is_ok());
    let e = invalid(&base.replace("[ingest]\n", "[ingest]\nmax_payload_bytes = 2000000\n"));
    assert_eq!(e.key, "ingest.max_payload_bytes");
    assert!(e.to_string().contains("983032"), "{e}");
}

#[test]
fn an_idle_timeout_shorter_than_a_sampling_interval_is_warned_about() {
    let text = "[agent]\ndevice = \"d1\"\n[engine]\nidle_timeout = \"30s\"\n\n[[sim]]\nname = \"slow\"\ninterval = \"1m\"\n";
    let w = Config::parse(text, None).unwrap().warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("`slow`") && w[0].contains("idle_timeout above 60000 ms"),
        "{}",
        w[0]
    );
    let ok = text.replace("30s", "5m");
    assert!(Config::parse(&ok, None).unwrap().warnings().is_empty());
    assert!(Config::parse(EXAMPLE, None).unwrap().warnings().is_empty());
}

#[test]
fn home_assistant_is_off_unless_its_section_is_present() {
    let c = Config::parse(MINIMAL, None).unwrap();
    assert!(c.homeassistant.is_none());
    let text = format!("{MINIMAL}[homeassistant]\n[homeassistant.units]\nvoltage = \"mV\"\n");
    let h = Config::parse(&text, None).unwrap().homeassistant.unwrap();
    assert_eq!(h.discovery_prefix, "homeassistant");
    assert_eq!(h.state, crate::homeassistant::StateValue::Mean);
    assert_eq!(h.units.get("voltage").map(String::as_str), Some("mV"));
}

#[test]
fn a_bad_home_assistant_section_names_its_key_and_line() {
    let e = invalid(&format!("{MINIMAL}[homeassistant]\nstate = \"median\"\n"));
    assert_eq!((e.key.as_str(), e.line), ("homeassistant.state", Some(7)));
    assert!(e.fix.contains("\"last\""), "{}", e.fix);
    for prefix in ["", "ha/", "/ha", "ha/#"] {
        let e = invalid(&format!(
            "{MINIMAL}[homeassistant]\ndiscovery_prefix = \"{prefix}\"\n"
        ));
        assert_eq!(e.key, "homeassistant.discovery_prefix", "{prefix}");
    }
    let e = invalid(&format!(
        "{MINIMAL}[homeassistant.units]\nvoltage = \" \"\n"
    ));
    assert_eq!(e.key, "homeassistant.units");
    let e = invalid(&format!(
        "{MINIMAL}[uplink]\ntopic_prefix = \"homeassistant/weir\"\n[homeassistant]\n"
    ));
    assert_eq!(e.key, "homeassistant.discovery_prefix");
    assert!(e.problem.contains("retained"), "{}", e.problem);
    let s = syntax(&format!("{MINIMAL}[homeassistant]\nprefix = \"x\"\n"));
    assert!(s.to_string().contains("prefix"), "{s}");
}

#[test]
fn the_example_home_assistant_section_is_valid_when_uncommented() {
    let keys = [
        "# [homeassistant",
        "# discovery_prefix",
        "# state = ",
        "# voltage = ",
    ];
    let text: Vec<&str> = EXAMPLE
        .lines()
        .map(|l| match keys.iter().any(|k| l.starts_with(k)) {
            true => &l[2..],
            false => l,
        })
        .collect();
    let c = Config::parse(&text.join("\n"), None).unwrap();
    let h = c.homeassistant.unwrap();
    assert_eq!(h.discovery_prefix, "homeassistant");
    assert_eq!(h.units.get("voltage").map(String::as_str), Some("mV"));
}

#[test]
fn the_example_reference_detector_is_valid_when_uncommented() {
    // The block from `name = "off-normal"` to its `clear_after`, uncommented.
    let mut on = false;
    let text: Vec<&str> = EXAMPLE
        .lines()
        .map(|l| {
            on |= l == "# [[detector]]";
            let line = if on { &l[2..] } else { l };
            on &= !l.starts_with("# clear_after = 10");
            line
        })
        .collect();
    let c = Config::parse(&text.join("\n"), None).unwrap();
    let d = c.detectors.iter().find(|d| d.name == "off-normal").unwrap();
    assert_eq!(
        d.kind,
        crate::detect::DetectorKind::Reference {
            commission: 300,
            threshold: 6.0,
            sustain: 3,
            clear_after: 10,
        }
    );
}

#[test]
fn a_reference_commissioning_shorter_than_a_minute_of_readings_is_refused() {
    let e = invalid(&format!(
        "{MINIMAL}[[detector]]\nname = \"r\"\nkind = \"reference\"\ncommission = 10\n"
    ));
    assert_eq!(e.key, "detector[0].commission");
    assert!(e.problem.contains(">= 60"), "{}", e.problem);
}
