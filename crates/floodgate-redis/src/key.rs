//! Key layout: `<prefix>:{<id>}:<policy key>` for a bucket, `<prefix>:{<id>}` for the id's index, and
//! `<prefix>:{<id>}#<policy key>` for a sliding log's runs (a sorted set beside its bucket).
//!
//! The id is percent-encoded inside the hash tag: every byte that is printable ASCII other than `%`, `{` and `}`
//! stands for itself, every other byte is `%XX` (upper-case hex), and the empty id is a lone `%`. The encoding
//! is injective (two ids never share a key) and never contains `}`, so the hash tag is exactly the id and every
//! key of one id lands in one cluster slot whatever bytes the id holds.

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

/// The index key of `id`: `<prefix>:{<encoded id>}`.
pub(crate) fn index_key(prefix: &str, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len() + 4);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(b":{");
    encode_id(id, &mut k);
    k.push(b'}');
    k
}

/// The bucket key of `id` under a policy key: `<prefix>:{<encoded id>}:<policy key>`.
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
        assert_eq!(index_key("fg", b"ip:10.0.0.1"), b"fg:{ip:10.0.0.1}".to_vec());
        assert_eq!(bucket_key(&index_key("fg", b"u"), "gcra:5/1000000us:b5"), b"fg:{u}:gcra:5/1000000us:b5".to_vec());
        assert_eq!(log_key(&index_key("fg", b"u"), "plan"), b"fg:{u}#plan".to_vec());
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
}
