//! The uplink over TLS against a Mosquitto TLS listener, with certificates made
//! for the test: mutual TLS works; a server signed by another CA is refused and
//! the log says why, naming the CA file.

use std::path::Path;
use std::time::Duration;

use weir_tests::{Broker, Certs, Consumer, Weir, scratch, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &Path, port: u16, ca: &Path, client: &Certs) -> std::path::PathBuf {
    let text = format!(
        r#"
[agent]
device = "tls"
state_dir = "{state}"
[engine.window]
size = "500ms"
[engine]
max_out_of_orderness = "0s"
[uplink]
host = "localhost"
port = {port}
reconnect_min = "100ms"
reconnect_max = "500ms"
[uplink.tls]
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"
[[sim]]
name = "s"
interval = "50ms"
base = 5.0
"#,
        state = dir.join("state").display(),
        ca = ca.display(),
        cert = client.client.0.display(),
        key = client.client.1.display(),
    );
    let path = dir.join("weir.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn results_arrive_over_mutual_tls() {
    let dir = scratch();
    let certs = Certs::generate(&dir.path().join("tls"));
    let mut broker = Broker::with_tls(dir.path(), &certs);
    broker.start();
    let consumer = Consumer::connect(broker.port, "weir/tls/#", None);
    let tls_port = broker.tls_port.unwrap_or_else(|| unreachable!());
    let weir = Weir::start(&config(dir.path(), tls_port, &certs.ca, &certs), dir.path());
    consumer
        .wait_until("a pane over TLS", WAIT, |m| {
            m.iter().any(|m| m.topic == "weir/tls/agg/s/value")
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nweir log:\n{}\nbroker log:\n{}",
                weir.log(),
                broker.log()
            )
        });
}

#[test]
fn a_server_signed_by_another_ca_is_refused_with_a_clear_error() {
    let dir = scratch();
    let certs = Certs::generate(&dir.path().join("tls"));
    let mut broker = Broker::with_tls(dir.path(), &certs);
    broker.start();
    let consumer = Consumer::connect(broker.port, "weir/tls/#", None);
    let tls_port = broker.tls_port.unwrap_or_else(|| unreachable!());
    let weir = Weir::start(
        &config(dir.path(), tls_port, &certs.other_ca, &certs),
        dir.path(),
    );
    let logged = wait_for(WAIT, || {
        let log = weir.log();
        log.contains(&format!("TLS with localhost:{tls_port} failed"))
            .then_some(log)
    })
    .unwrap_or_else(|| panic!("no TLS error logged:\n{}", weir.log()));
    assert!(
        logged.contains(&certs.other_ca.display().to_string()),
        "the CA file is named:\n{logged}"
    );
    assert!(
        logged.contains("UnknownIssuer"),
        "the reason is given:\n{logged}"
    );
    assert!(
        consumer.messages().is_empty(),
        "nothing may pass an unverified link: {:?}",
        consumer.messages()
    );
}
