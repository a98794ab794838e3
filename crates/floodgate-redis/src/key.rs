//! Key layout. An id's counters live in its **shard**: a hash `<prefix>#{<tag>}` shared by every id of one Redis
//! Cluster slot, where `<tag>` is the shortest alphanumeric string whose slot is the id's slot (see [`shard_key`]).
//! Each counter is one field of the shard: `<field id> <policy part>` (see [`field`]), whose value is the packed
//! state. A sliding log's runs are a sorted set beside it, `<prefix>:{<id>}#<policy key>`.
//!
//! The id's slot is the slot of its encoded hash tag, the tag of the layouts of earlier releases, which are still
//! read (see the crate docs on migration): the id hash `<prefix>{<id>}` (a field per policy key), and before it a
//! hash per bucket `<prefix>:{<id>}:<policy key>` with an index set `<prefix>:{<id>}`. All of an id's keys, old
//! and new, share one slot, so one atomic script reads, migrates and deletes them on a cluster too. The shard key
//! has `#` after the prefix, which no key of the other layouts has, so it never equals one of theirs.
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

use std::sync::OnceLock;

use floodgate::Policy;
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
    if id.len() > hash_over {
        let mut k = Vec::with_capacity(prefix.len() + 75);
        k.extend_from_slice(prefix.as_bytes());
        k.push(b'{');
        encode_hashed_id(id, &mut k);
        k.push(b'}');
        return k;
    }
    let mut k = Vec::with_capacity(prefix.len() + id.len() + 3);
    k.extend_from_slice(prefix.as_bytes());
    k.push(b'{');
    encode_id(id, &mut k);
    k.push(b'}');
    k
}

/// The index key, in the per-bucket layout of earlier releases, of the id whose id hash key ([`id_key`]) is
/// `id_key`: `<prefix>:{<encoded id>}`, the same tag after a `:` (the id is not encoded again). Sliding logs'
/// keys still start with it.
pub(crate) fn index_key(prefix: &str, id_key: &[u8]) -> Vec<u8> {
    let tagged = id_key.get(prefix.len()..).unwrap_or_default();
    let mut k = Vec::with_capacity(id_key.len() + 1);
    k.extend_from_slice(prefix.as_bytes());
    k.push(b':');
    k.extend_from_slice(tagged);
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

/// Redis Cluster's hash slot of a hash tag: CRC16 (XMODEM) of the tag, modulo 16384.
pub(crate) fn slot(tag: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag) & 16383
}

/// A slot's shard tag: up to four alphanumeric bytes.
#[derive(Clone, Copy, Default)]
struct SlotTag {
    bytes: [u8; 4],
    len: u8,
}

/// The shard tag of every slot: the first alphanumeric string, shortest first, whose slot it is. Built once per
/// process (a few hundred thousand CRC16s, about a millisecond); every slot has one of at most three bytes.
fn slot_tags() -> &'static [SlotTag] {
    static TAGS: OnceLock<Vec<SlotTag>> = OnceLock::new();
    TAGS.get_or_init(|| {
        const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut tags = vec![SlotTag::default(); 16384];
        let mut left = tags.len();
        for len in 1..=4 {
            let mut digits = [0usize; 4];
            'odometer: loop {
                let mut tag = SlotTag { bytes: [0; 4], len: len as u8 };
                for (b, &d) in tag.bytes.iter_mut().zip(&digits[..len]) {
                    *b = ALPHABET[d];
                }
                let t = &mut tags[usize::from(slot(&tag.bytes[..len]))];
                if t.len == 0 {
                    *t = tag;
                    left -= 1;
                    if left == 0 {
                        return tags;
                    }
                }
                for d in digits[..len].iter_mut() {
                    *d += 1;
                    if *d < ALPHABET.len() {
                        continue 'odometer;
                    }
                    *d = 0;
                }
                break;
            }
        }
        tags
    })
}

/// The shard of the id whose id hash key ([`id_key`]) is `id_key`: `<prefix>#{<tag>}`, where `<tag>` is the shard
/// tag of the id's slot, so the shard and every key of the id share one slot. With `per_slot` shards per slot,
/// the id's is number (the first two bytes of the SHA-256 of the id's tag) mod `per_slot`, written after the `#`
/// unless it is 0. (A CRC is linear: its low bits split sequential ids unevenly.)
pub(crate) fn shard_key(prefix: &str, id_key: &[u8], per_slot: u16) -> Vec<u8> {
    // `<prefix>{<tag>}`: the tag is what the braces hold.
    let tag = id_key.get(prefix.len() + 1..id_key.len().saturating_sub(1)).unwrap_or_default();
    let t = slot_tags()[usize::from(slot(tag))];
    let mut k = Vec::with_capacity(prefix.len() + 12);
    k.extend_from_slice(prefix.as_bytes());
    k.push(b'#');
    if per_slot > 1 {
        let h = Sha256::digest(tag);
        let n = u16::from_be_bytes([h[0], h[1]]) % per_slot;
        if n > 0 {
            k.extend_from_slice(n.to_string().as_bytes());
        }
    }
    k.push(b'{');
    k.extend_from_slice(&t.bytes[..usize::from(t.len)]);
    k.push(b'}');
    k
}

/// The longest field id kept as the id's own bytes; a longer one is hashed, so that a field stays within Redis's
/// listpack limit (64 bytes) with a compact policy part.
const FIELD_ID_MAX: usize = 40;

/// The field of `id`'s counter under `policy` in its shard: `<field id> <policy part>`.
///
/// The field id is the id's bytes with `%` and space written `%25` and `%20` (the empty id: a lone `%`), or,
/// when that would be longer than [`FIELD_ID_MAX`], `%h` and the first 16 bytes of the id's SHA-256 in hex. It
/// never holds a space, so the fields of one id are exactly those starting with `<field id> `, and it is
/// injective (an escape is `%` and two upper-case hex digits, never `%h`).
///
/// The policy part is the name of a named policy (after a `\x02` if the name starts with byte 1 or 2), or for
/// an unnamed one its key made short: byte 1, the algorithm's letter and the key after its `<algorithm>:`
/// without the `us` (`fixed_window:100/60000000us` is `\x01w100/60000000`, `gcra:10/3600000000us:b5` is
/// `\x01g10/3600000000:b5`). Named policies cannot take an algorithm's name as their prefix, so the parts of
/// two different policy keys differ. `delete.lua` turns a policy part back into its key.
pub(crate) fn field(id: &[u8], policy: &Policy) -> Vec<u8> {
    let key = policy.key();
    let mut f = field_prefix(id, key.len() + 1);
    match policy.name() {
        Some(name) => {
            if matches!(name.as_bytes().first(), Some(1 | 2)) {
                f.push(2);
            }
            f.extend_from_slice(name.as_bytes());
        }
        None => {
            let alg = policy.algorithm();
            let rest = key.get(alg.name().len() + 1..).unwrap_or_default();
            let (lw, tail) = rest.split_once("us").unwrap_or((rest, ""));
            f.extend_from_slice(&[1, algorithm_letter(alg)]);
            f.extend_from_slice(lw.as_bytes());
            f.extend_from_slice(tail.as_bytes());
        }
    }
    f
}

/// What every field of `id` starts with: its field id and a space (see [`field`]), with room for `more` bytes.
pub(crate) fn field_prefix(id: &[u8], more: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(FIELD_ID_MAX + 1 + more);
    field_id(id, &mut f);
    f.push(b' ');
    f
}

/// The field id of `id` (see [`field`]).
fn field_id(id: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if id.is_empty() {
        out.push(b'%');
        return;
    }
    let escaped = id.len() + 2 * id.iter().filter(|&&b| b == b' ' || b == b'%').count();
    if escaped > FIELD_ID_MAX {
        out.extend_from_slice(b"%h");
        for b in &Sha256::digest(id)[..16] {
            out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        return;
    }
    for &b in id {
        match b {
            b' ' => out.extend_from_slice(b"%20"),
            b'%' => out.extend_from_slice(b"%25"),
            _ => out.push(b),
        }
    }
}

/// The letter of an algorithm in a compact policy part (`delete.lua` maps it back).
fn algorithm_letter(a: floodgate::Algorithm) -> u8 {
    use floodgate::Algorithm as A;
    match a {
        A::FixedWindow => b'w',
        A::SlidingWindow => b's',
        A::TokenBucket => b't',
        A::LeakyBucket => b'k',
        A::Gcra => b'g',
        A::SlidingLog => b'l',
        _ => b'?',
    }
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
        assert_eq!(index_key("fg", &id_key("fg", b"ip:10.0.0.1", 4096)), b"fg:{ip:10.0.0.1}".to_vec());
        assert_eq!(id_key("fg", b"ip:10.0.0.1", 4096), b"fg{ip:10.0.0.1}".to_vec());
        assert_eq!(
            bucket_key(&index_key("fg", &id_key("fg", b"u", 4096)), "gcra:5/1000000us:b5"),
            b"fg:{u}:gcra:5/1000000us:b5".to_vec()
        );
        assert_eq!(log_key(&index_key("fg", &id_key("fg", b"u", 4096)), "plan"), b"fg:{u}#plan".to_vec());
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
        assert_eq!(index_key("fg", &id_key("fg", &id, 5)), b"fg:{aaaaa}".to_vec());
        let long = vec![b'a'; 6];
        let k = String::from_utf8(index_key("fg", &id_key("fg", &long, 5))).unwrap_or_default();
        // sha256("aaaaaa")
        assert_eq!(k, "fg:{%sha256:ed02457b5c41d964dbd2f2a609d63fe1bb7528dbe55e1abf5b52c249cd735797}");
        // Two long ids sharing a long prefix get different tags; a short id spelled like a tag is still escaped.
        let (mut a, mut b) = (vec![b'x'; 20_000], vec![b'x'; 20_000]);
        a.push(b'1');
        b.push(b'2');
        assert_ne!(index_key("fg", &id_key("fg", &a, 4096)), index_key("fg", &id_key("fg", &b, 4096)));
        let spoof = &k.as_bytes()[4..k.len() - 1];
        assert_ne!(index_key("fg", &id_key("fg", spoof, 4096)), k.as_bytes());
    }

    #[test]
    fn slots_are_redis_clusters() {
        // CLUSTER KEYSLOT foo / bar / the CRC16 check value.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(crc16::State::<crc16::XMODEM>::calculate(b"123456789"), 0x31c3);
    }

    #[test]
    fn every_slot_has_a_short_alphanumeric_shard_tag_of_its_own() {
        let tags = slot_tags();
        assert_eq!(tags.len(), 16384);
        for (s, t) in tags.iter().enumerate() {
            let tag = &t.bytes[..usize::from(t.len)];
            assert!((1..=3).contains(&tag.len()) && tag.iter().all(u8::is_ascii_alphanumeric), "{tag:?}");
            assert_eq!(usize::from(slot(tag)), s);
        }
    }

    #[test]
    fn an_ids_shard_is_in_its_slot() {
        for id in [&b"user:42"[..], b"", b"a}b", &[0xff; 5000]] {
            let idk = id_key("fg", id, 4096);
            let shard = shard_key("fg", &idk, 1);
            let tag_of = |k: &[u8]| {
                let open = k.iter().position(|&b| b == b'{').unwrap_or(0);
                let close = k.iter().position(|&b| b == b'}').unwrap_or(k.len());
                slot(&k[open + 1..close])
            };
            assert!(shard.starts_with(b"fg#{") && shard.len() <= 8, "{shard:?}");
            assert_eq!(tag_of(&shard), tag_of(&idk));
            assert_eq!(tag_of(&index_key("fg", &id_key("fg", id, 4096))), tag_of(&idk));
        }
    }

    #[test]
    fn shards_per_slot_split_a_slot_and_keep_shard_0s_key() {
        let mut seen = std::collections::HashMap::new();
        for i in 0..4000 {
            let idk = id_key("fg", format!("user:{i}").as_bytes(), 4096);
            let one = shard_key("fg", &idk, 1);
            let four = shard_key("fg", &idk, 4);
            // Same slot: the same tag in the braces.
            assert_eq!(
                one[one.iter().position(|&b| b == b'{').unwrap_or(0)..],
                four[four.iter().position(|&b| b == b'{').unwrap_or(0)..]
            );
            let n = match &four[3..four.iter().position(|&b| b == b'{').unwrap_or(3)] {
                b"" => 0,
                d => std::str::from_utf8(d).ok().and_then(|d| d.parse::<u16>().ok()).unwrap_or(99),
            };
            assert!(n < 4, "{four:?}");
            if n == 0 {
                assert_eq!(one, four, "shard 0 keeps the key of one shard per slot");
            }
            *seen.entry(n).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 4);
        assert!(seen.values().all(|&c| c > 900), "{seen:?}");
    }

    #[test]
    fn fields_are_short_and_name_their_id_and_policy() -> Result<(), floodgate::PolicyError> {
        use std::time::Duration;
        let fw = Policy::fixed_window(100, Duration::from_secs(60))?;
        assert_eq!(field(b"ip:10.0.0.7", &fw), b"ip:10.0.0.7 \x01w100/60000000".to_vec());
        let g = Policy::gcra(10, Duration::from_secs(3600))?.with_burst(5)?;
        assert_eq!(g.key(), "gcra:10/3600000000us:b5");
        assert_eq!(field(b"u", &g), b"u \x01g10/3600000000:b5".to_vec());
        assert_eq!(field(b"", &fw.clone().named("plan")?), b"% plan".to_vec());
        assert_eq!(field(b"a b%", &fw.clone().named("\x01x")?), b"a%20b%25 \x02\x01x".to_vec());
        let long = field(&[b'x'; 41], &fw);
        assert!(long.starts_with(b"%h") && long.len() == 34 + 1 + 14, "{long:?}");
        assert!(field(&[b'x'; 40], &fw).starts_with(&[b'x'; 40]));
        Ok(())
    }

    #[test]
    fn field_ids_are_injective_and_spaceless() {
        let ids: [&[u8]; 10] = [b"", b"%", b"%25", b" ", b"%20", b"a b", b"a%20b", &[b'x'; 40], &[b'x'; 41], b"%h"];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let mut f = Vec::new();
            field_id(id, &mut f);
            assert!(!f.contains(&b' ') && !f.is_empty(), "{id:?} -> {f:?}");
            assert!(seen.insert(f), "{id:?} collides");
        }
    }
}
