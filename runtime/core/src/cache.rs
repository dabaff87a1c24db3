//! The cache key: the one definition of what makes two step executions the same.
//!
//! A step's [`CacheKey`] is the blake3 of this encoding (version 2), where
//! every field is written as a tag byte, a little-endian `u64` length, and the
//! bytes, so no two different inputs encode alike:
//!
//! | tag | field |
//! |-----|-------|
//! | `V` | the literal `weir-cache-key-v2` |
//! | `C` | the component's digest (blake3 of its wasm bytes) |
//! | `W` | the world it runs in (`weir:step/step@0.1.0`) |
//! | `E` | the engine's semantics, [`ENGINE_SEMANTICS`] |
//! | `G` | each granted capability, sorted, one field each |
//! | `P` | the params as canonical JSON (keys sorted, no spaces) |
//! | `I` | each input, sorted by name, as `name` then `0x00` then the artifact digest |
//! | `O` | each declared output name, sorted |
//! | `M` | the memory limit in bytes, as decimal (it can change what a step computes) |
//!
//! Timeouts, fuel and output caps are left out: they can stop a step but not
//! change what a successful step writes. Clocks and randomness inside the
//! sandbox are derived from the key, so equal keys see equal sandboxes.

use crate::digest::Digest;
use std::collections::BTreeMap;

/// The world every step of this version runs in.
pub const STEP_WORLD: &str = "weir:step/step@0.1.0";

/// What the engine guarantees about floating point beyond the wasm spec,
/// so that a step computes the same bits on every CPU: NaN results are
/// canonicalised and relaxed SIMD instructions behave deterministically
/// (wasmtime's `cranelift_nan_canonicalization` and
/// `relaxed_simd_deterministic`, which the executor sets). Part of every
/// cache key: an engine with other semantics would need other keys.
pub const ENGINE_SEMANTICS: &str = "nan-canonical relaxed-simd-deterministic";

/// The identity of one step execution; equal keys give equal outputs.
pub type CacheKey = Digest;

/// Everything a cache key covers.
#[derive(Debug, Clone)]
pub struct KeyInputs<'a> {
    /// Digest of the component's bytes.
    pub component: &'a Digest,
    /// The world.
    pub world: &'a str,
    /// Capabilities granted beyond the world, any order.
    pub capabilities: &'a [String],
    /// The step's params (a JSON object).
    pub params: &'a serde_json::Value,
    /// Input name to artifact digest.
    pub inputs: &'a BTreeMap<String, Digest>,
    /// Declared output names.
    pub outputs: &'a [&'a str],
    /// Memory limit in bytes.
    pub memory_bytes: u64,
}

fn field(h: &mut blake3::Hasher, tag: u8, bytes: &[u8]) {
    h.update(&[tag]);
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Computes the cache key (see the module docs for the encoding).
pub fn cache_key(k: &KeyInputs<'_>) -> CacheKey {
    let mut h = blake3::Hasher::new();
    field(&mut h, b'V', b"weir-cache-key-v2");
    field(&mut h, b'C', k.component.as_bytes());
    field(&mut h, b'W', k.world.as_bytes());
    field(&mut h, b'E', ENGINE_SEMANTICS.as_bytes());
    let mut caps: Vec<&String> = k.capabilities.iter().collect();
    caps.sort();
    for c in caps {
        field(&mut h, b'G', c.as_bytes());
    }
    field(&mut h, b'P', canonical_json(k.params).as_bytes());
    for (name, d) in k.inputs {
        let mut v = Vec::with_capacity(name.len() + 33);
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        v.extend_from_slice(d.as_bytes());
        field(&mut h, b'I', &v);
    }
    let mut outs: Vec<&str> = k.outputs.to_vec();
    outs.sort_unstable();
    for o in outs {
        field(&mut h, b'O', o.as_bytes());
    }
    field(&mut h, b'M', k.memory_bytes.to_string().as_bytes());
    h.finalize().into()
}

/// JSON with object keys sorted at every level and no insignificant spaces.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    // Only serde_json's own output (valid UTF-8) and ASCII punctuation were written.
    String::from_utf8(out).unwrap_or_default()
}

fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    // Writing JSON scalars into a Vec cannot fail.
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, k.as_str());
                out.push(b':');
                write_canonical(x, out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(params: serde_json::Value, inputs: &BTreeMap<String, Digest>, mem: u64) -> CacheKey {
        cache_key(&KeyInputs {
            component: &Digest::of(b"wasm"),
            world: STEP_WORLD,
            capabilities: &[],
            params: &params,
            inputs,
            outputs: &["out"],
            memory_bytes: mem,
        })
    }

    #[test]
    fn canonical_json_sorts_keys() {
        assert_eq!(
            canonical_json(&json!({"b": 1, "a": {"d": [1, "x"], "c": null}})),
            r#"{"a":{"c":null,"d":[1,"x"]},"b":1}"#
        );
    }

    #[test]
    fn every_field_changes_the_key() {
        let mut inputs = BTreeMap::new();
        inputs.insert("data".to_string(), Digest::of(b"1"));
        let base = key(json!({"a": 1}), &inputs, 10);
        assert_eq!(base, key(json!({"a": 1}), &inputs, 10));
        assert_ne!(base, key(json!({"a": 2}), &inputs, 10));
        assert_ne!(base, key(json!({"a": 1}), &inputs, 11));
        let mut other = inputs.clone();
        other.insert("data".to_string(), Digest::of(b"2"));
        assert_ne!(base, key(json!({"a": 1}), &other, 10));
    }
}
