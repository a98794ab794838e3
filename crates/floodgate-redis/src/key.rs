//! Key layout: `<prefix>{<id>}` for the id's hash (one field per policy: the field is the policy key, the value
//! its packed state), and `<prefix>:{<id>}#<policy key>` for a sliding log's runs (a sorted set beside it).
//!
//! The per-bucket layout of earlier releases (still read, see the crate docs on migration) had a hash per bucket,
//! `<prefix>:{<id>}:<policy key>`, and an index set `<prefix>:{<id>}` of the id's bucket keys. The new hash key
//! has no `:` before the `{`, so it never equals a key of that layout under the same prefix; all share the hash
//! tag, so one slot.
//!
//! The id is percent-encoded inside the hash tag: every byte that is printable ASCII other than `%`, `{` and `}`
//! stands for itself, every other byte is `%XX` (upper-case hex), and the empty id is a lone `%`. The encoding
//! is injective (two ids never share a key) and never contains `}`, so the hash tag is exactly the id and every
//! key of one id lands in one cluster slot whatever bytes the id holds.
//!
//! An id longer than the store's hashing threshold ([`crate::DEFAULT_HASH_IDS_LONGER_THAN`] by default) is keyed
//! by its SHA-256 instead: the hash tag is `%sha256:<64 lower-case hex digits>`. The encoding of a short id never
//! holds `%s` (a `%` is always followed by two upper-case hex digits, or ends the empty id's lone `%`), so a
//! hashed tag never equals a short id's; two long ids share a tag only if SHA-256 collides.

use sha2::{Digest, Sha256};

/// Appends the hash-tag encoding of `id` to `out`.
pub(crate) fn encode_id(id: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if id.is_empty() {
        out.push(b'%');
        return;
    }
    for &b in id {
        if (0x21..=0x7e).contains(&b) && !matches!(b, b'%' | b'{' | b'}') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// Appends the hashed tag of a long id: `%sha256:` and the SHA-256 of `id` in lower-case hex.
fn encode_hashed_id(id: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"%sha256:");
    for b in Sha256::digest(id) {
        out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
}

/// The hash key of `id`: `<prefix>{<encoded id>}`, or `<prefix>{%sha256:<hex>}` when the id is longer than
/// `hash_over` bytes.
pub(crate) fn id_key(prefix: &str, id: &[u8], hash_over: usize) -> Vec<u8> {
    tagged(prefix, b"{", id, hash_over)
}

/// The index key of `id` in the per-bucket layout of earlier releases: `<prefix>:{<encoded id>}`, or `<prefix>:{%sha256:<hex>}` when
/// the id is longer than `hash_over` bytes. Sliding logs' keys still start with it.
pub(crate) fn index_key(prefix: &str, id: &[u8], hash_over: usize) -> Vec<u8> {
    tagged(prefix, b":{", id, hash_over)
}

fn tagged(prefix: &str, open: &[u8], id: &[u8], hash_over: usize) -> Vec<u8> {
    if id.len() > hash_over {
        let mut k = Vec::with_capacity(prefix.len() + 76);
        k.extend_from_slice(prefix.as_bytes());
        k.extend_from_slice(open);
        encode_hashed_id(id, &mut k);
        k.push(b'}');
        return k;
    }
    let mut k = Vec::with_capacity(prefix.len() + id.len() + 4);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(open);
    encode_id(id, &mut k);
    k.push(b'}');
    k
}

/// The bucket key of `id` under a policy key in the per-bucket layout of earlier releases: `<prefix>:{<encoded id>}:<policy key>`.
pub(crate) fn bucket_key(index_key: &[u8], policy_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(index_key.len() + policy_key.len() + 1);
    k.extend_from_slice(index_key);
    k.push(b':');
    k.extend_from_slice(policy_key.as_bytes());
    k
}

/// The run set of a sliding log: `<prefix>:{<encoded id>}#<policy key>`. It never equals a bucket or index key
/// (of any id or prefix): the first `}` ends the hash tag, and only this key has a `#` after it. `delete.lua`
/// derives it from the bucket key the same way.
pub(crate) fn log_key(index_key: &[u8], policy_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(index_key.len() + policy_key.len() + 1);
    k.extend_from_slice(index_key);
    k.push(b'#');
    k.extend_from_slice(policy_key.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(id: &[u8]) -> String {
        let mut v = Vec::new();
        encode_id(id, &mut v);
        String::from_utf8(v).unwrap_or_default()
    }

    #[test]
    fn readable_ids_stay_readable() {
        assert_eq!(enc(b"user:42"), "user:42");
        assert_eq!(index_key("fg", b"ip:10.0.0.1", 4096), b"fg:{ip:10.0.0.1}".to_vec());
        assert_eq!(id_key("fg", b"ip:10.0.0.1", 4096), b"fg{ip:10.0.0.1}".to_vec());
        assert_eq!(
            bucket_key(&index_key("fg", b"u", 4096), "gcra:5/1000000us:b5"),
            b"fg:{u}:gcra:5/1000000us:b5".to_vec()
        );
        assert_eq!(log_key(&index_key("fg", b"u", 4096), "plan"), b"fg:{u}#plan".to_vec());
    }

    #[test]
    fn braces_percent_and_binary_are_escaped() {
        assert_eq!(enc(b""), "%");
        assert_eq!(enc(b"%"), "%25");
        assert_eq!(enc(b"a}:{b"), "a%7D:%7Bb");
        assert_eq!(enc(b"\0 \xff"), "%00%20%FF");
    }

    #[test]
    fn encoding_is_injective_on_tricky_ids() {
        let ids: [&[u8]; 12] =
            [b"", b"%", b"%25", b"{", b"}", b"a}:{b", b"\0", b"a\0b", b"\xff\xfe", b"\xc3\x28", b"user:1", b"user:1 "];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let e = enc(id);
            assert!(!e.contains('}') && !e.contains('{') && !e.is_empty(), "{id:?} -> {e}");
            assert!(seen.insert(e), "{id:?} collides");
        }
    }

    #[test]
    fn long_ids_are_hashed_inside_the_tag() {
        // At the threshold the layout is today's; one byte over, the SHA-256 of the id.
        let id = vec![b'a'; 5];
        assert_eq!(index_key("fg", &id, 5), b"fg:{aaaaa}".to_vec());
        let long = vec![b'a'; 6];
        let k = String::from_utf8(index_key("fg", &long, 5)).unwrap_or_default();
        // sha256("aaaaaa")
        assert_eq!(k, "fg:{%sha256:ed02457b5c41d964dbd2f2a609d63fe1bb7528dbe55e1abf5b52c249cd735797}");
        // Two long ids sharing a long prefix get different tags; a short id spelled like a tag is still escaped.
        let (mut a, mut b) = (vec![b'x'; 20_000], vec![b'x'; 20_000]);
        a.push(b'1');
        b.push(b'2');
        assert_ne!(index_key("fg", &a, 4096), index_key("fg", &b, 4096));
        let spoof = &k.as_bytes()[4..k.len() - 1];
        assert_ne!(index_key("fg", spoof, 4096), k.as_bytes());
    }
}
