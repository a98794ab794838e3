//! The wire protocol, pure: frames, their compact binary encoding, and the HMAC challenge-response.
//!
//! Every frame travels length-delimited ([`codec`]: a 4-byte big-endian length, at most [`MAX_FRAME`] bytes).
//! Its first byte is a tag; integers are LEB128 varints; strings and byte strings are a varint length and the
//! bytes. Every length and count is bounded before anything is allocated, and decoding any bytes returns a
//! frame or a [`FrameError`], never a panic.
//!
//! ```
//! use floodgate_cluster::frame::{Frame, Hello, PROTOCOL_VERSION};
//!
//! let hello = Frame::Hello(Hello { version: PROTOCOL_VERSION, node_id: "a".into(), nonce: [7; 32], wall_ms: 1, listen_port: 7946 });
//! let bytes = hello.encode();
//! assert_eq!(Frame::decode(&bytes)?, hello);
//! assert!(Frame::decode(&bytes[..3]).is_err());
//! # Ok::<(), floodgate_cluster::frame::FrameError>(())
//! ```

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::codec::LengthDelimitedCodec;

use crate::counter::EntryKey;
use crate::store::KeyCounts;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The largest frame, in bytes (after the length prefix).
pub const MAX_FRAME: usize = 1 << 20;
/// The most keys one entries frame carries.
pub const MAX_KEYS_PER_FRAME: usize = 4096;
/// The most node ids one entries frame names (and so the most per key).
pub const MAX_NODES_PER_FRAME: usize = 256;
/// The longest node id, in bytes.
pub const MAX_NODE_ID_LEN: usize = 255;
/// The longest policy key, in bytes.
pub const MAX_POLICY_LEN: usize = 1024;
/// The longest id, in bytes.
pub const MAX_ID_LEN: usize = 4096;
/// The size an entries frame is filled to before another is started.
const TARGET_FRAME: usize = 256 * 1024;

/// A length-delimited codec bounded to [`MAX_FRAME`].
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).length_field_length(4).new_codec()
}

/// The first frame each side sends: who it is, its challenge, and its wall clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The sender's node id.
    pub node_id: String,
    /// A fresh random challenge.
    pub nonce: [u8; 32],
    /// The sender's wall clock, in milliseconds since the epoch (to see the clock skew).
    pub wall_ms: u64,
    /// The port the sender listens on for peers (its address is the one the link comes from).
    pub listen_port: u16,
}

/// A batch of counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entries {
    /// The sender's wall clock when it sent the batch, in ms (the receiver works out the replication lag).
    pub sent_ms: u64,
    /// The counters.
    pub keys: Vec<KeyCounts>,
}

/// One message on a peer link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Identity and challenge.
    Hello(Hello),
    /// The answer to the peer's challenge: HMAC-SHA256 with the cluster secret (see [`proof`]).
    Auth {
        /// The MAC.
        mac: [u8; 32],
    },
    /// Counters.
    Entries(Entries),
    /// The end of the full sync that follows the handshake.
    SyncEnd,
    /// Nothing to send: the link is alive.
    Ping,
    /// The addresses of the sender's other peers, so that every node links to every other.
    Peers(Vec<String>),
}

/// Why bytes are not a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame ended early.
    #[error("the frame ended early")]
    Truncated,
    /// The first byte names no frame.
    #[error("unknown frame tag {0}")]
    UnknownTag(u8),
    /// A length or count is over its bound.
    #[error("{what} over its bound ({got} > {max})")]
    TooLarge {
        /// What.
        what: &'static str,
        /// The value found.
        got: u64,
        /// The bound.
        max: u64,
    },
    /// A varint longer than 64 bits.
    #[error("a varint overflows 64 bits")]
    Varint,
    /// A string that is not UTF-8.
    #[error("a string is not UTF-8")]
    Utf8,
    /// A key names a node the frame does not list.
    #[error("a node index past the frame's node table")]
    NodeIndex,
    /// Bytes after the end of the frame.
    #[error("{0} bytes after the end of the frame")]
    Trailing(usize),
}

const TAG_HELLO: u8 = 1;
const TAG_AUTH: u8 = 2;
const TAG_ENTRIES: u8 = 3;
const TAG_SYNC_END: u8 = 4;
const TAG_PING: u8 = 5;
const TAG_PEERS: u8 = 6;
/// The most addresses one peers frame lists.
pub const MAX_PEERS_PER_FRAME: usize = 1024;
/// The longest address, in bytes.
pub const MAX_ADDR_LEN: usize = 300;

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.put_slice(b);
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, FrameError> {
        let (&x, rest) = self.b.split_first().ok_or(FrameError::Truncated)?;
        self.b = rest;
        Ok(x)
    }

    fn varint(&mut self) -> Result<u64, FrameError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(FrameError::Varint);
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(FrameError::Varint)
    }

    fn bounded(&mut self, what: &'static str, max: usize) -> Result<usize, FrameError> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(FrameError::TooLarge { what, got: n, max: max as u64 });
        }
        Ok(n as usize)
    }

    fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], FrameError> {
        let n = self.bounded(what, max)?;
        if self.b.len() < n {
            return Err(FrameError::Truncated);
        }
        let (x, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(x)
    }

    fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str, FrameError> {
        std::str::from_utf8(self.bytes(what, max)?).map_err(|_| FrameError::Utf8)
    }

    fn array32(&mut self) -> Result<[u8; 32], FrameError> {
        if self.b.len() < 32 {
            return Err(FrameError::Truncated);
        }
        let (x, rest) = self.b.split_at(32);
        self.b = rest;
        let mut out = [0u8; 32];
        out.copy_from_slice(x);
        Ok(out)
    }
}

impl Frame {
    /// Encodes the frame (without the length prefix the codec adds).
    pub fn encode(&self) -> BytesMut {
        let mut buf = BytesMut::with_capacity(64);
        match self {
            Frame::Hello(h) => {
                buf.put_u8(TAG_HELLO);
                put_varint(&mut buf, u64::from(h.version));
                put_bytes(&mut buf, h.node_id.as_bytes());
                buf.put_slice(&h.nonce);
                put_varint(&mut buf, h.wall_ms);
                put_varint(&mut buf, u64::from(h.listen_port));
            }
            Frame::Auth { mac } => {
                buf.put_u8(TAG_AUTH);
                buf.put_slice(mac);
            }
            Frame::Entries(e) => {
                buf.put_u8(TAG_ENTRIES);
                put_varint(&mut buf, e.sent_ms);
                // The node table: each node id once per frame, keys name nodes by index.
                let mut table: Vec<&Arc<str>> = Vec::new();
                for k in &e.keys {
                    for (n, _) in &k.counts {
                        if !table.iter().any(|t| **t == *n) {
                            table.push(n);
                        }
                    }
                }
                put_varint(&mut buf, table.len() as u64);
                for n in &table {
                    put_bytes(&mut buf, n.as_bytes());
                }
                put_varint(&mut buf, e.keys.len() as u64);
                for k in &e.keys {
                    put_bytes(&mut buf, k.key.policy.as_bytes());
                    put_varint(&mut buf, k.key.window_us);
                    put_varint(&mut buf, k.key.start);
                    put_bytes(&mut buf, &k.key.id);
                    put_varint(&mut buf, k.counts.len() as u64);
                    for (n, c) in &k.counts {
                        let i = table.iter().position(|t| **t == *n).unwrap_or(0);
                        put_varint(&mut buf, i as u64);
                        put_varint(&mut buf, *c);
                    }
                }
            }
            Frame::SyncEnd => buf.put_u8(TAG_SYNC_END),
            Frame::Ping => buf.put_u8(TAG_PING),
            Frame::Peers(addrs) => {
                buf.put_u8(TAG_PEERS);
                let addrs = &addrs[..addrs.len().min(MAX_PEERS_PER_FRAME)];
                put_varint(&mut buf, addrs.len() as u64);
                for a in addrs {
                    put_bytes(&mut buf, &a.as_bytes()[..a.len().min(MAX_ADDR_LEN)]);
                }
            }
        }
        buf
    }

    /// Decodes one frame, checking every bound; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        if bytes.len() > MAX_FRAME {
            return Err(FrameError::TooLarge { what: "frame", got: bytes.len() as u64, max: MAX_FRAME as u64 });
        }
        let mut r = Reader { b: bytes };
        let frame = match r.u8()? {
            TAG_HELLO => {
                let version = r.varint()?;
                let version = u16::try_from(version).map_err(|_| FrameError::TooLarge {
                    what: "version",
                    got: version,
                    max: u64::from(u16::MAX),
                })?;
                let node_id = r.str("node id", MAX_NODE_ID_LEN)?.to_owned();
                let nonce = r.array32()?;
                let wall_ms = r.varint()?;
                let port = r.varint()?;
                let listen_port = u16::try_from(port).map_err(|_| FrameError::TooLarge {
                    what: "port",
                    got: port,
                    max: u64::from(u16::MAX),
                })?;
                Frame::Hello(Hello { version, node_id, nonce, wall_ms, listen_port })
            }
            TAG_AUTH => Frame::Auth { mac: r.array32()? },
            TAG_ENTRIES => {
                let sent_ms = r.varint()?;
                let n = r.bounded("node ids in a frame", MAX_NODES_PER_FRAME)?;
                let mut table: Vec<Arc<str>> = Vec::with_capacity(n);
                for _ in 0..n {
                    table.push(r.str("node id", MAX_NODE_ID_LEN)?.into());
                }
                let n = r.bounded("keys in a frame", MAX_KEYS_PER_FRAME)?;
                // Each key takes at least 5 bytes: no allocation past what the frame can hold.
                let mut keys = Vec::with_capacity(n.min(r.b.len() / 5));
                for _ in 0..n {
                    let policy: Arc<str> = r.str("policy key", MAX_POLICY_LEN)?.into();
                    let window_us = r.varint()?;
                    let start = r.varint()?;
                    let id: Arc<[u8]> = r.bytes("id", MAX_ID_LEN)?.into();
                    let m = r.bounded("node ids in a key", MAX_NODES_PER_FRAME)?;
                    let mut counts = Vec::with_capacity(m.min(r.b.len() / 2));
                    for _ in 0..m {
                        let i = r.varint()?;
                        let node = usize::try_from(i).ok().and_then(|i| table.get(i)).ok_or(FrameError::NodeIndex)?;
                        counts.push((node.clone(), r.varint()?));
                    }
                    keys.push(KeyCounts { key: EntryKey { policy, window_us, start, id }, counts });
                }
                Frame::Entries(Entries { sent_ms, keys })
            }
            TAG_SYNC_END => Frame::SyncEnd,
            TAG_PING => Frame::Ping,
            TAG_PEERS => {
                let n = r.bounded("addresses in a frame", MAX_PEERS_PER_FRAME)?;
                let mut addrs = Vec::with_capacity(n.min(r.b.len()));
                for _ in 0..n {
                    addrs.push(r.str("address", MAX_ADDR_LEN)?.to_owned());
                }
                Frame::Peers(addrs)
            }
            other => return Err(FrameError::UnknownTag(other)),
        };
        if !r.b.is_empty() {
            return Err(FrameError::Trailing(r.b.len()));
        }
        Ok(frame)
    }
}

/// Cuts `keys` into entries frames that each stay well under [`MAX_FRAME`] and [`MAX_KEYS_PER_FRAME`].
///
/// ```
/// use floodgate_cluster::frame::{Frame, batches};
/// assert!(batches(Vec::new(), 0).is_empty());
/// ```
pub fn batches(keys: Vec<KeyCounts>, sent_ms: u64) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut cur: Vec<KeyCounts> = Vec::new();
    let (mut size, mut nodes): (usize, Vec<Arc<str>>) = (0, Vec::new());
    for k in keys {
        let est = k.key.policy.len() + k.key.id.len() + 32 + k.counts.len() * 12;
        let new_nodes = k.counts.iter().filter(|(n, _)| !nodes.contains(n)).count();
        if !cur.is_empty()
            && (size + est > TARGET_FRAME
                || cur.len() >= MAX_KEYS_PER_FRAME
                || nodes.len() + new_nodes > MAX_NODES_PER_FRAME)
        {
            out.push(Frame::Entries(Entries { sent_ms, keys: std::mem::take(&mut cur) }));
            size = 0;
            nodes.clear();
        }
        for (n, _) in &k.counts {
            if !nodes.contains(n) {
                nodes.push(n.clone());
            }
        }
        size += est;
        cur.push(k);
    }
    if !cur.is_empty() {
        out.push(Frame::Entries(Entries { sent_ms, keys: cur }));
    }
    out
}

/// Which side of a link a proof is for (so that a proof cannot be reflected back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that dialed.
    Dialer,
    /// The side that accepted.
    Acceptor,
}

/// The proof `role` sends: HMAC-SHA256 with the cluster secret over a protocol label, the role, both nonces
/// and both node ids (dialer's first). The secret itself never crosses the wire.
///
/// ```
/// use floodgate_cluster::frame::{Hello, Role, proof, verify};
/// let d = Hello { version: 1, node_id: "a".into(), nonce: [1; 32], wall_ms: 0, listen_port: 7946 };
/// let a = Hello { version: 1, node_id: "b".into(), nonce: [2; 32], wall_ms: 0, listen_port: 7946 };
/// let mac = proof(b"secret", Role::Dialer, &d, &a);
/// assert!(verify(b"secret", Role::Dialer, &d, &a, &mac));
/// assert!(!verify(b"other", Role::Dialer, &d, &a, &mac));
/// assert!(!verify(b"secret", Role::Acceptor, &d, &a, &mac));
/// ```
pub fn proof(secret: &[u8], role: Role, dialer: &Hello, acceptor: &Hello) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(mac) = mac_of(secret, role, dialer, acceptor) {
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// Checks a peer's proof in constant time.
pub fn verify(secret: &[u8], role: Role, dialer: &Hello, acceptor: &Hello, mac: &[u8; 32]) -> bool {
    mac_of(secret, role, dialer, acceptor).is_some_and(|m| m.verify_slice(mac).is_ok())
}

fn mac_of(secret: &[u8], role: Role, dialer: &Hello, acceptor: &Hello) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    mac.update(b"floodgate-cluster/1 auth");
    mac.update(&[match role {
        Role::Dialer => 1,
        Role::Acceptor => 2,
    }]);
    mac.update(&dialer.nonce);
    mac.update(&acceptor.nonce);
    for id in [&dialer.node_id, &acceptor.node_id] {
        mac.update(&(id.len() as u64).to_be_bytes());
        mac.update(id.as_bytes());
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key_counts() -> impl Strategy<Value = KeyCounts> {
        (
            "[a-z:/0-9]{0,20}",
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..40),
            prop::collection::vec(("[a-z0-9-]{1,12}", any::<u64>()), 0..5),
        )
            .prop_map(|(policy, window_us, start, id, counts)| KeyCounts {
                key: EntryKey { policy: policy.into(), window_us, start, id: id.into() },
                counts: counts.into_iter().map(|(n, c)| (Arc::from(n), c)).collect(),
            })
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any::<u16>(), "[a-z0-9-]{0,30}", any::<[u8; 32]>(), any::<u64>(), any::<u16>()).prop_map(
                |(version, node_id, nonce, wall_ms, listen_port)| Frame::Hello(Hello {
                    version,
                    node_id,
                    nonce,
                    wall_ms,
                    listen_port
                })
            ),
            prop::collection::vec("[0-9.:]{0,30}", 0..5).prop_map(Frame::Peers),
            any::<[u8; 32]>().prop_map(|mac| Frame::Auth { mac }),
            (any::<u64>(), prop::collection::vec(key_counts(), 0..20))
                .prop_map(|(sent_ms, keys)| Frame::Entries(Entries { sent_ms, keys })),
            Just(Frame::SyncEnd),
            Just(Frame::Ping),
        ]
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(f in frame()) {
            prop_assert_eq!(Frame::decode(&f.encode()), Ok(f));
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&bytes);
        }

        /// Corrupting one byte of a valid frame gives an error or another frame, never a panic.
        #[test]
        fn corrupted_frames_decode_without_panic(f in frame(), at in any::<prop::sample::Index>(), to in any::<u8>()) {
            let mut bytes = f.encode().to_vec();
            let i = at.index(bytes.len());
            bytes[i] = to;
            let _ = Frame::decode(&bytes);
            let _ = Frame::decode(&bytes[..i]);
        }
    }

    #[test]
    fn bounds_are_checked_before_allocating() {
        // An entries frame claiming 2^40 keys.
        let mut b = BytesMut::new();
        b.put_u8(TAG_ENTRIES);
        put_varint(&mut b, 0);
        put_varint(&mut b, 0);
        put_varint(&mut b, 1 << 40);
        assert!(matches!(Frame::decode(&b), Err(FrameError::TooLarge { .. })));
        assert_eq!(Frame::decode(&[9]), Err(FrameError::UnknownTag(9)));
        assert_eq!(Frame::decode(&[TAG_PING, 0]), Err(FrameError::Trailing(1)));
        assert_eq!(
            Frame::decode(&[TAG_HELLO, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(FrameError::Varint)
        );
    }

    #[test]
    fn batches_stay_under_the_bounds() {
        let keys: Vec<KeyCounts> = (0..10_000u32)
            .map(|i| KeyCounts {
                key: EntryKey { policy: "p".into(), window_us: 1, start: 0, id: i.to_be_bytes().to_vec().into() },
                counts: vec![("n".into(), 1)],
            })
            .collect();
        let frames = batches(keys, 0);
        assert!(frames.len() >= 3);
        for f in &frames {
            let len = f.encode().len();
            assert!(len <= MAX_FRAME, "{len}");
            assert!(Frame::decode(&f.encode()).is_ok());
        }
    }
}
