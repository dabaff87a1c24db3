//! Saving and loading trained models: `model.safetensors` (the weights, in
//! the safetensors layout: an 8-byte little-endian header length, a JSON
//! header naming each tensor's dtype, shape and byte range, then the raw
//! little-endian data) and `model.json` (what kind of model it is).

use crate::trainers::Model;
use crate::{KernelError, Matrix, Result};
use serde_json::{Value, json};

/// The metadata written beside the weights.
pub fn model_json(model: &Model, kind: &str, backend: &str) -> String {
    json!({
        "format": "weir-model-v1",
        "kind": kind,
        "classes": model.classes,
        "layers": model.weights.len(),
        "inputs": model.weights.first().map(|w| w.rows()).unwrap_or(0),
        "backend": backend,
    })
    .to_string()
}

/// The weights as safetensors bytes: `layer{i}.weight` (inputs x outputs) and `layer{i}.bias`.
pub fn to_safetensors(model: &Model) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    let mut put = |name: String, shape: Vec<usize>, values: &[f32]| {
        let start = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name,
            json!({ "dtype": "F32", "shape": shape, "data_offsets": [start, data.len()] }),
        );
    };
    for (i, (w, b)) in model.weights.iter().zip(&model.biases).enumerate() {
        put(
            format!("layer{i}.weight"),
            vec![w.rows(), w.cols()],
            w.as_slice(),
        );
        put(format!("layer{i}.bias"), vec![b.len()], b);
    }
    let mut head = Value::Object(header).to_string().into_bytes();
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + data.len());
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&data);
    out
}

/// Reads a model back from the bytes of `model.safetensors` and `model.json`.
pub fn from_safetensors(bytes: &[u8], meta: &str) -> Result<Model> {
    let bad = |why: String| KernelError::Invalid(format!("not a weir model: {why}"));
    let meta: Value = serde_json::from_str(meta).map_err(|e| bad(format!("model.json: {e}")))?;
    if meta["format"] != "weir-model-v1" {
        return Err(bad(format!(
            "model.json has format {}, expected \"weir-model-v1\"",
            meta["format"]
        )));
    }
    let classes = meta["classes"]
        .as_u64()
        .ok_or_else(|| bad("model.json has no classes".into()))? as usize;
    let layers = meta["layers"]
        .as_u64()
        .ok_or_else(|| bad("model.json has no layers".into()))? as usize;
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .ok_or_else(|| bad("file too short".into()))? as usize;
    let head = bytes
        .get(8..8 + len)
        .ok_or_else(|| bad("header runs past the end".into()))?;
    let header: Value = serde_json::from_slice(head).map_err(|e| bad(format!("header: {e}")))?;
    let data = &bytes[8 + len..];
    let tensor = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let t = &header[name];
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .ok_or_else(|| bad(format!("no tensor {name}")))?
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as usize))
            .collect();
        let off = t["data_offsets"]
            .as_array()
            .ok_or_else(|| bad(format!("{name} has no data_offsets")))?;
        let (a, b) = (
            off[0].as_u64().unwrap_or(0) as usize,
            off.get(1).and_then(|v| v.as_u64()).unwrap_or(0) as usize,
        );
        let raw = data
            .get(a..b)
            .ok_or_else(|| bad(format!("{name} lies outside the file")))?;
        if t["dtype"] != "F32" || raw.len() != shape.iter().product::<usize>() * 4 {
            return Err(bad(format!("{name} is not F32 data of its shape")));
        }
        Ok((
            shape,
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    };
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    for i in 0..layers {
        let (shape, w) = tensor(&format!("layer{i}.weight"))?;
        if shape.len() != 2 {
            return Err(bad(format!("layer{i}.weight is not a matrix")));
        }
        weights.push(Matrix::from_vec(shape[0], shape[1], w)?);
        biases.push(tensor(&format!("layer{i}.bias"))?.1);
    }
    Ok(Model {
        weights,
        biases,
        classes,
        loss_history: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainers::{LogisticConfig, logistic_regression};
    use crate::{Backend, CpuBackend};

    #[test]
    fn a_model_round_trips_through_safetensors() {
        let be = CpuBackend::new();
        let x = Matrix::from_rows(&[&[0.0, 1.0], &[1.0, 0.0], &[2.0, 2.0]]);
        let m = logistic_regression(
            &be,
            &x,
            &[0, 1, 2],
            3,
            &LogisticConfig {
                epochs: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let bytes = to_safetensors(&m);
        let back =
            from_safetensors(&bytes, &model_json(&m, "logistic", &be.kind().to_string())).unwrap();
        assert_eq!(back.weights, m.weights);
        assert_eq!(back.biases, m.biases);
        assert!(from_safetensors(&bytes[..10], "{}").is_err());
    }
}
