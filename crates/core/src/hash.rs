//! The one stable hash of Chorus: 64-bit FNV-1a (the `fnv` crate), for keys that must give the same
//! value on every platform and release (data splits, DARE mask streams, seeds per subject, tokenizer
//! digests), unlike std's randomised hasher.

use std::hash::Hasher as _;

/// FNV-1a 64 of the concatenation of `parts` (feeding pieces one after another equals hashing them joined).
pub fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = fnv::FnvHasher::default();
    for p in parts {
        h.write(p);
    }
    h.finish()
}

/// FNV-1a 64 of a string's UTF-8 bytes.
pub fn fnv1a_str(s: &str) -> u64 {
    fnv1a([s.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_vectors() {
        // From the FNV reference test suite (64-bit FNV-1a).
        assert_eq!(fnv1a_str(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_str("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_str("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a([b"foo".as_slice(), b"bar"]), fnv1a_str("foobar"));
    }
}
