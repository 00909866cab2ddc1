//! An MQTT publisher for test input: QoS 1, and each publish returns once the broker
//! acknowledged it (PUBACK), so "published" means "the broker has it" (queued for every
//! persistent session that matches, whatever Weir is doing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use crate::unique_id;

/// How long one publish may wait for its PUBACK before the test fails.
const ACK_WAIT: Duration = Duration::from_secs(60);

/// A publisher connected to one broker (clean session, keeps reconnecting).
pub struct Publisher {
    client: Client,
    sent: AtomicU64,
    acked: Arc<(Mutex<u64>, Condvar)>,
    port: u16,
}

impl Publisher {
    /// Connects to the broker on 127.0.0.1:`port`.
    pub fn connect(port: u16) -> Self {
        let mut opts = MqttOptions::new(format!("test-pub-{}", unique_id()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut connection) = Client::new(opts, 256);
        let acked = Arc::new((Mutex::new(0u64), Condvar::new()));
        std::thread::spawn({
            let acked = acked.clone();
            move || {
                for ev in connection.iter() {
                    match ev {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            let (n, cv) = &*acked;
                            if let Ok(mut n) = n.lock() {
                                *n += 1;
                            }
                            cv.notify_all();
                        }
                        Ok(_) => {}
                        // The broker is away (stopped by the test): retry, as a device would.
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            }
        });
        Self {
            client,
            sent: AtomicU64::new(0),
            acked,
            port,
        }
    }

    /// Publishes `payload` (any bytes) with QoS 1 and waits for the broker's PUBACK.
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.send(topic, payload.into(), false);
        self.flush();
    }

    /// Publishes a retained message (QoS 1) and waits for its PUBACK.
    pub fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.send(topic, payload.into(), true);
        self.flush();
    }

    /// Publishes every message in order without waiting between them (the client keeps up
    /// to its inflight limit unacknowledged), then waits until the broker acknowledged all.
    pub fn publish_all<T: AsRef<str>, P: Into<Vec<u8>>>(
        &self,
        messages: impl IntoIterator<Item = (T, P)>,
    ) {
        for (topic, payload) in messages {
            self.send(topic.as_ref(), payload.into(), false);
        }
        self.flush();
    }

    /// Queues one QoS 1 publish without waiting for its PUBACK ([`Publisher::flush`] does).
    pub fn send(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .unwrap_or_else(|e| panic!("publish on {topic}: {e}"));
        self.sent.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits until the broker acknowledged everything sent so far.
    pub fn flush(&self) {
        let want = self.sent.load(Ordering::SeqCst);
        let (n, cv) = &*self.acked;
        let guard = n.lock().unwrap_or_else(|e| e.into_inner());
        let (got, timeout) = cv
            .wait_timeout_while(guard, ACK_WAIT, |n| *n < want)
            .unwrap_or_else(|e| e.into_inner());
        assert!(
            !timeout.timed_out(),
            "the broker on port {} acknowledged {} of {want} publishes within {ACK_WAIT:?}",
            self.port,
            *got
        );
    }

    /// Publishes what `next(i)` gives (i = 0, 1, ...) every `every` until `done` holds,
    /// for at most `timeout`: how a test finds out that a pipeline is live end to end.
    pub fn publish_until<T>(
        &self,
        timeout: Duration,
        every: Duration,
        mut next: impl FnMut(u64) -> (String, Vec<u8>),
        mut done: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let mut i = 0;
        crate::wait_for(timeout, || {
            let (topic, payload) = next(i);
            i += 1;
            self.publish(&topic, payload);
            crate::wait_for(every, &mut done)
        })
    }

    /// Disconnects cleanly.
    pub fn disconnect(self) {
        let _ = self.client.disconnect();
    }
}
