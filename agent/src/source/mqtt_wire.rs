//! Framing of the ingest connection's byte stream into MQTT 3.1.1 packets, with
//! no I/O: bytes go in through [`Framer::buffer`], frames come out of
//! [`Framer::next_frame`].
//!
//! Why our own framing: a client that refuses a packet above its size limit has
//! only one move left, dropping the connection, and the broker then sends the
//! same packet again at every reconnect, forever: one oversized payload would stop
//! ingest for good. Here a PUBLISH larger than the limit is never held in memory:
//! its topic and packet id are read, the first [`EXCERPT`] bytes of its payload
//! kept for the dead letter, and the rest discarded as it streams in. It comes out
//! as [`Frame::Oversized`], which the ingest task dead-letters and acknowledges
//! like any other message. Every other packet is decoded by rumqttc's codec.
//!
//! Memory: at most `max_packet` bytes buffered plus what one read brings.

use bytes::{Buf, BytesMut};
use rumqttc::{Packet, QoS};

/// Bytes of an oversized payload kept for its dead letter.
pub const EXCERPT: usize = 256;

/// One unit of the stream.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A packet within the limit, decoded.
    Packet(Packet),
    /// A PUBLISH above the limit: everything but its payload, which was discarded.
    Oversized(Oversized),
}

/// What is kept of a PUBLISH above the limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oversized {
    /// Its topic.
    pub topic: String,
    /// Its packet id (0 for QoS 0).
    pub pkid: u16,
    /// Its QoS.
    pub qos: QoS,
    /// The DUP flag.
    pub dup: bool,
    /// The RETAIN flag.
    pub retain: bool,
    /// The payload's size in bytes.
    pub payload_len: usize,
    /// The payload's first [`EXCERPT`] bytes.
    pub head: Vec<u8>,
}

/// The stream cannot be read as MQTT: the connection must be dropped.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// rumqttc's codec refused a packet.
    #[error("malformed packet: {0}")]
    Malformed(#[from] rumqttc::Error),
    /// A packet other than PUBLISH above the limit (no broker sends one).
    #[error("a packet of type {kind} and {len} bytes is above the {max}-byte limit")]
    TooLarge {
        /// The packet type (upper four bits of the first byte).
        kind: u8,
        /// Its remaining length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// See the module documentation.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max_packet: usize,
    skipping: Option<(Oversized, usize)>,
}

/// A fixed header: the first byte, the remaining length, and the header's own length.
fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len += usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((first, len, 2 + i)));
        }
    }
    Err(FrameError::Malformed(
        rumqttc::Error::MalformedRemainingLength,
    ))
}

impl Framer {
    /// A framer that decodes packets of up to `max_packet` bytes (fixed header
    /// included) and streams larger PUBLISH packets past.
    pub fn new(max_packet: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(8 * 1024),
            max_packet,
            skipping: None,
        }
    }

    /// Where the next bytes read from the connection go.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next complete frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some((over, left)) = &mut self.skipping {
            let take = (*left).min(self.buf.len());
            let room = EXCERPT.saturating_sub(over.head.len()).min(take);
            over.head.extend_from_slice(&self.buf[..room]);
            self.buf.advance(take);
            *left -= take;
            if *left > 0 {
                return Ok(None);
            }
            return Ok(self.skipping.take().map(|(o, _)| Frame::Oversized(o)));
        }
        let Some((first, len, header)) = fixed_header(&self.buf)? else {
            return Ok(None);
        };
        if header + len <= self.max_packet {
            if self.buf.len() < header + len {
                self.buf.reserve(header + len - self.buf.len());
                return Ok(None);
            }
            return Ok(Some(Frame::Packet(Packet::read(
                &mut self.buf,
                self.max_packet,
            )?)));
        }
        let kind = first >> 4;
        if kind != 3 {
            return Err(FrameError::TooLarge {
                kind,
                len,
                max: self.max_packet,
            });
        }
        // PUBLISH: topic length, topic, then a packet id for QoS 1 and 2.
        let qos = match (first >> 1) & 0b11 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            q => return Err(FrameError::Malformed(rumqttc::Error::InvalidQoS(q))),
        };
        let rest = &self.buf[header..];
        if rest.len() < 2 {
            return Ok(None);
        }
        let topic_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
        let var_len = 2 + topic_len + id_len;
        if var_len > len {
            return Err(FrameError::Malformed(rumqttc::Error::MalformedPacket));
        }
        if rest.len() < var_len {
            return Ok(None);
        }
        let topic = std::str::from_utf8(&rest[2..2 + topic_len])
            .map_err(|_| FrameError::Malformed(rumqttc::Error::TopicNotUtf8))?
            .to_string();
        let pkid = if id_len == 0 {
            0
        } else {
            u16::from_be_bytes([rest[2 + topic_len], rest[3 + topic_len]])
        };
        let over = Oversized {
            topic,
            pkid,
            qos,
            dup: first & 0b1000 != 0,
            retain: first & 1 != 0,
            payload_len: len - var_len,
            head: Vec::new(),
        };
        self.buf.advance(header + var_len);
        self.skipping = Some((over, len - var_len));
        self.next_frame()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rumqttc::{PubRel, Publish};

    fn encode(p: &Packet) -> Vec<u8> {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).unwrap();
        b.to_vec()
    }

    fn publish(topic: &str, qos: QoS, pkid: u16, payload: Vec<u8>) -> Packet {
        let mut p = Publish::new(topic, qos, payload);
        p.pkid = pkid;
        p.retain = true;
        Packet::Publish(p)
    }

    /// Feeds `bytes` in chunks of `chunk` and collects every frame.
    fn frames(max: usize, bytes: &[u8], chunk: usize) -> Vec<Frame> {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            f.buffer().extend_from_slice(c);
            while let Some(fr) = f.next_frame().unwrap() {
                out.push(fr);
            }
        }
        assert!(f.buffer().is_empty());
        out
    }

    #[test]
    fn packets_within_the_limit_are_decoded_whatever_the_chunking() {
        let a = publish("a/b", QoS::ExactlyOnce, 7, b"21.5".to_vec());
        let b = Packet::PubRel(PubRel::new(7));
        let mut bytes = encode(&a);
        bytes.extend(encode(&b));
        for chunk in [1, 3, 1000] {
            assert_eq!(
                frames(1024, &bytes, chunk),
                vec![Frame::Packet(a.clone()), Frame::Packet(b.clone())]
            );
        }
    }

    #[test]
    fn an_oversized_publish_is_streamed_past_keeping_its_ids_and_an_excerpt() {
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let over = publish("dev/x", QoS::ExactlyOnce, 65_535, big.clone());
        let after = publish("dev/y", QoS::AtLeastOnce, 3, b"1".to_vec());
        let mut bytes = encode(&over);
        bytes.extend(encode(&after));
        for chunk in [7, 4096, 1 << 20] {
            let got = frames(1024 * 1024, &bytes, chunk);
            assert_eq!(got.len(), 2);
            let Frame::Oversized(o) = &got[0] else {
                panic!("{:?}", got[0]);
            };
            assert_eq!(
                (o.topic.as_str(), o.pkid, o.qos),
                ("dev/x", 65_535, QoS::ExactlyOnce)
            );
            assert!(o.retain && !o.dup);
            assert_eq!(o.payload_len, big.len());
            assert_eq!(o.head, big[..EXCERPT]);
            assert_eq!(got[1], Frame::Packet(after.clone()));
        }
    }

    #[test]
    fn an_oversized_packet_that_is_not_a_publish_is_an_error() {
        let mut f = Framer::new(16);
        // SUBACK (type 9) claiming 100 bytes.
        f.buffer().extend_from_slice(&[0x90, 100, 0, 1]);
        assert!(matches!(
            f.next_frame(),
            Err(FrameError::TooLarge { kind: 9, .. })
        ));
    }

    #[test]
    fn a_remaining_length_of_five_bytes_is_malformed() {
        let mut f = Framer::new(16);
        f.buffer()
            .extend_from_slice(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(f.next_frame().is_err());
    }
}
