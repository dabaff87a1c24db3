//! Decoding a stored folder record (an artifact's tree object): any bytes
//! either decode to a tree that encodes back to the same bytes, or are an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = weir_runtime::tree::Tree::decode(data) {
        assert_eq!(tree.encode(), data, "the encoding is canonical");
    }
});
