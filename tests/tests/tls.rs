//! The uplink over TLS against a Mosquitto TLS listener, with certificates made
//! for the test: mutual TLS works; a server signed by another CA is refused and
//! the log says why, naming the CA file.

use std::path::Path;
use std::time::Duration;

use weir_tests::{Broker, Certs, Config, Recorder, Weir, scratch, toml};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &Path, port: u16, ca: &Path, client: &Certs) -> std::path::PathBuf {
    Config::new("tls", dir)
        .set("engine.window", "size", "500ms")
        .engine(toml! { max_out_of_orderness = "0s" })
        .upstream(port)
        .uplink(toml! { host = "localhost", reconnect_max = "500ms" })
        .table("uplink.tls", toml! {
            ca_file = ca, cert_file = client.client.0.as_path(), key_file = client.client.1.as_path(),
        })
        .sim(toml! { name = "s", interval = "50ms", base = 5.0 })
        .write()
}

#[test]
fn results_arrive_over_mutual_tls() {
    let dir = scratch();
    let certs = Certs::generate(&dir.path().join("tls"));
    let mut broker = Broker::with_tls(dir.path(), &certs);
    broker.start();
    let consumer = Recorder::connect(broker.port, "weir/tls/#");
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
    let consumer = Recorder::connect(broker.port, "weir/tls/#");
    let tls_port = broker.tls_port.unwrap_or_else(|| unreachable!());
    let weir = Weir::start(
        &config(dir.path(), tls_port, &certs.other_ca, &certs),
        dir.path(),
    );
    weir.wait_log(&format!("TLS with localhost:{tls_port} failed"), WAIT);
    let logged = weir.log();
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
