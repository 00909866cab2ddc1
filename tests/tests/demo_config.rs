//! The demo (scripts/demo.sh) runs a second weir beside any installed one: its config
//! passes `config check` and keeps its control socket in the demo's own directory, so
//! it never takes the system socket (/run/weir) of an installed weir.

use weir_tests::{cli, scratch};

#[test]
fn the_demo_config_is_valid_and_keeps_its_socket_in_its_own_directory() {
    let script =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/demo.sh"))
            .unwrap_or_else(|e| panic!("scripts/demo.sh: {e}"));
    let start = "cat > \"$work/weir.toml\" <<CONF\n";
    let body = script
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("\nCONF\n"))
        .map(|(body, _)| body)
        .unwrap_or_else(|| panic!("no weir.toml heredoc in scripts/demo.sh"));
    let dir = scratch();
    let work = dir.path().to_str().unwrap_or_default();
    let text = body.replace("$work", work).replace("$port", "1883");
    let runtime = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("runtime_dir = "))
        .map(|v| v.trim_matches('"').to_string());
    assert_eq!(
        runtime.as_deref(),
        Some(format!("{work}/run").as_str()),
        "{text}"
    );
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let out = cli(["config", "check", path.to_str().unwrap_or_default()]);
    assert_eq!(out.code, Some(0), "{}", out.all());
}
