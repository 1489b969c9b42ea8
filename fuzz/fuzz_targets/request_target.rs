//! Arbitrary request targets through the canonicalizer, under every
//! encoded-slash policy: never panics; an accepted path starts with '/', has
//! no dot-segments and no NUL, and canonicalizing it again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lb_route::{EncodedSlash, PathPolicy, Target};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    for encoded_slash in [EncodedSlash::Reject, EncodedSlash::Keep, EncodedSlash::Decode] {
        for merge_slashes in [true, false] {
            let policy = PathPolicy::default().with_encoded_slash(encoded_slash).with_merge_slashes(merge_slashes);
            let Ok(t) = Target::parse(raw, &policy) else { continue };
            assert!(t.path.starts_with('/'));
            assert!(!t.path.contains('\0'));
            assert!(!t.path.split('/').any(|s| s == "." || s == ".."), "{raw:?} -> {:?}", t.path);
            let again = Target::parse(&t.path, &policy).expect("a canonical path parses");
            assert_eq!(again.path, t.path, "{raw:?}");
        }
    }
});
