//! The `gpu` capability: weir-host-gpu's kernels behind the WIT `gpu`
//! interface, for trusted steps only.
//!
//! Tensors stay on the host (in the store's `ResourceTable`); data enters
//! from the step's input files (read by the host, never through guest
//! memory) and trained models are written by the host into the step's output
//! folder. Every name the guest passes (input, output, file) is checked
//! against the step's own mounts.

use crate::exec::bindings::trusted::gpu::{self, LogisticConfig, MlpConfig, Trained};
use crate::exec::host_state::HostState;
use std::path::PathBuf;
use wasmtime::component::Resource;
use weir_host_gpu::trainers::{self, Model};
use weir_host_gpu::{Backend, Matrix, Optimizer, model_io};

/// A tensor held by the host for a guest.
pub struct Tensor(Matrix);

/// The most cells a tensor may hold (1 GiB of f32).
const MAX_CELLS: usize = 1 << 28;

impl HostState {
    fn training_backend(&self) -> Result<&dyn Backend, String> {
        self.gpu
            .as_deref()
            .ok_or_else(|| "the gpu capability is not granted to this step".to_string())
    }

    /// Keeps `m` for the guest, counted against the step's memory limit.
    fn keep(&mut self, m: Matrix) -> Result<Resource<Tensor>, String> {
        let bytes = m.as_slice().len() as u64 * 4;
        self.charge(bytes)
            .map_err(|e| format!("a {} tensor: {e}", m.shape()))?;
        self.table.push(Tensor(m)).map_err(|e| {
            self.release(bytes);
            e.to_string()
        })
    }

    fn tensor(&self, t: &Resource<Tensor>) -> Result<&Matrix, String> {
        self.table
            .get(t)
            .map(|t| &t.0)
            .map_err(|e| format!("bad tensor handle: {e}"))
    }

    fn mount(&self, outputs: bool, name: &str) -> Result<PathBuf, String> {
        let list = if outputs {
            &self.mounts.outputs
        } else {
            &self.mounts.inputs
        };
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
                format!(
                    "the step has no {} named '{name}' (it has: {})",
                    if outputs { "output" } else { "input" },
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            })
    }

    fn labels(&self, t: &Resource<Tensor>, classes: u32) -> Result<Vec<usize>, String> {
        let m = self.tensor(t)?;
        if m.cols() != 1 {
            return Err(format!("labels must be one column, found {}", m.shape()));
        }
        m.as_slice()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if v.fract() == 0.0 && *v >= 0.0 && (*v as u32) < classes {
                    Ok(*v as usize)
                } else {
                    Err(format!(
                        "label {v} of row {i} is not a class number below {classes}"
                    ))
                }
            })
            .collect()
    }

    fn save(
        &self,
        model: &Model,
        kind: &str,
        output: &str,
        x: &Matrix,
        y: &[usize],
    ) -> Result<Trained, String> {
        let be = self.training_backend()?;
        let dir = self.mount(true, output)?;
        let backend = be.kind().to_string();
        std::fs::write(
            dir.join("model.safetensors"),
            model_io::to_safetensors(model),
        )
        .map_err(|e| format!("writing the model: {e}"))?;
        std::fs::write(
            dir.join("model.json"),
            model_io::model_json(model, kind, &backend),
        )
        .map_err(|e| format!("writing the model: {e}"))?;
        let predicted = model.predict(be, x).map_err(|e| e.to_string())?;
        Ok(Trained {
            train_accuracy: trainers::accuracy(&predicted, y),
            final_loss: model.loss_history.last().copied().unwrap_or(f32::NAN),
            backend,
        })
    }
}

fn check_file_name(file: &str) -> Result<(), String> {
    crate::tree::check_entry_name(file).map_err(|e| format!("file name {file:?}: {e}"))
}

impl gpu::HostTensor for HostState {
    fn from_values(
        &mut self,
        rows: u32,
        cols: u32,
        values: Vec<f32>,
    ) -> Result<Resource<Tensor>, String> {
        let m =
            Matrix::from_vec(rows as usize, cols as usize, values).map_err(|e| e.to_string())?;
        self.keep(m)
    }

    fn from_csv(
        &mut self,
        input: String,
        file: String,
        columns: Vec<String>,
    ) -> Result<Resource<Tensor>, String> {
        check_file_name(&file)?;
        let path = self.mount(false, &input)?.join(&file);
        let mut r = csv::Reader::from_path(&path)
            .map_err(|e| format!("input '{input}' file '{file}': {e}"))?;
        let headers = r
            .headers()
            .map_err(|e| format!("input '{input}' file '{file}': {e}"))?
            .clone();
        let idx: Vec<usize> = columns
            .iter()
            .map(|c| {
                headers.iter().position(|h| h.trim() == c).ok_or_else(|| {
                    format!(
                        "input '{input}' file '{file}' has no column '{c}' (columns: {})",
                        headers.iter().collect::<Vec<_>>().join(", ")
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let mut data = Vec::new();
        let mut rows = 0usize;
        for rec in r.records() {
            let rec = rec.map_err(|e| format!("input '{input}' file '{file}': {e}"))?;
            for (&i, c) in idx.iter().zip(&columns) {
                let cell = rec.get(i).unwrap_or("").trim();
                let v: f32 = cell
                    .parse()
                    .map_err(|_| format!("input '{input}' file '{file}' row {}: column '{c}' holds {cell:?}, not a number", rows + 1))?;
                data.push(v);
            }
            rows += 1;
            if data.len() as u64 * 4 > self.room() {
                return Err(format!(
                    "input '{input}' file '{file}': its values do not fit the step's memory limit ({} bytes left)",
                    self.room()
                ));
            }
            if data.len() > MAX_CELLS {
                return Err(format!(
                    "input '{input}' file '{file}' is over the tensor limit of {MAX_CELLS} cells"
                ));
            }
        }
        let m = Matrix::from_vec(rows, idx.len(), data).map_err(|e| e.to_string())?;
        self.keep(m)
    }

    fn from_npy(&mut self, input: String, file: String) -> Result<Resource<Tensor>, String> {
        check_file_name(&file)?;
        let path = self.mount(false, &input)?.join(&file);
        let meta =
            std::fs::metadata(&path).map_err(|e| format!("input '{input}' file '{file}': {e}"))?;
        if meta.len() > (MAX_CELLS as u64) * 8 + 65_536 {
            return Err(format!(
                "input '{input}' file '{file}' is over the tensor limit of {MAX_CELLS} cells"
            ));
        }
        if meta.len() > self.room() {
            return Err(format!(
                "input '{input}' file '{file}' ({} bytes) does not fit the step's memory limit ({} bytes left)",
                meta.len(),
                self.room()
            ));
        }
        let bytes =
            std::fs::read(&path).map_err(|e| format!("input '{input}' file '{file}': {e}"))?;
        let m = weir_host_gpu::npy::read_npy(&bytes, MAX_CELLS)
            .map_err(|e| format!("input '{input}' file '{file}': {e}"))?;
        self.keep(m)
    }

    fn rows(&mut self, t: Resource<Tensor>) -> u32 {
        self.tensor(&t).map(|m| m.rows() as u32).unwrap_or(0)
    }

    fn cols(&mut self, t: Resource<Tensor>) -> u32 {
        self.tensor(&t).map(|m| m.cols() as u32).unwrap_or(0)
    }

    fn values(&mut self, t: Resource<Tensor>) -> Vec<f32> {
        self.tensor(&t)
            .map(|m| m.as_slice().to_vec())
            .unwrap_or_default()
    }

    fn drop(&mut self, t: Resource<Tensor>) -> wasmtime::Result<()> {
        let t = self.table.delete(t)?;
        self.release(t.0.as_slice().len() as u64 * 4);
        Ok(())
    }
}

impl gpu::Host for HostState {
    fn backend(&mut self) -> String {
        self.gpu
            .as_ref()
            .map(|b| b.kind().to_string())
            .unwrap_or_default()
    }

    fn train_logistic(
        &mut self,
        x: Resource<Tensor>,
        labels: Resource<Tensor>,
        classes: u32,
        c: LogisticConfig,
        output: String,
    ) -> Result<Trained, String> {
        let y = self.labels(&labels, classes)?;
        let xm = self.tensor(&x)?.clone();
        let cfg = trainers::LogisticConfig {
            epochs: c.epochs as usize,
            batch_size: c.batch_size as usize,
            optimizer: Optimizer::adam(c.learning_rate),
            l2: c.l2,
            seed: c.seed,
        };
        let model = trainers::logistic_regression(
            self.training_backend()?,
            &xm,
            &y,
            classes as usize,
            &cfg,
        )
        .map_err(|e| e.to_string())?;
        self.save(&model, "logistic", &output, &xm, &y)
    }

    fn train_mlp(
        &mut self,
        x: Resource<Tensor>,
        labels: Resource<Tensor>,
        classes: u32,
        c: MlpConfig,
        output: String,
    ) -> Result<Trained, String> {
        let y = self.labels(&labels, classes)?;
        let xm = self.tensor(&x)?.clone();
        let cfg = trainers::MlpConfig {
            hidden: c.hidden.iter().map(|h| *h as usize).collect(),
            epochs: c.epochs as usize,
            batch_size: c.batch_size as usize,
            optimizer: Optimizer::adam(c.learning_rate),
            l2: c.l2,
            seed: c.seed,
        };
        let model = trainers::mlp(self.training_backend()?, &xm, &y, classes as usize, &cfg)
            .map_err(|e| e.to_string())?;
        self.save(&model, "mlp", &output, &xm, &y)
    }

    fn predict_proba(
        &mut self,
        model_input: String,
        x: Resource<Tensor>,
    ) -> Result<Resource<Tensor>, String> {
        let dir = self.mount(false, &model_input)?;
        let bytes = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| format!("input '{model_input}': model.safetensors: {e}"))?;
        let meta = std::fs::read_to_string(dir.join("model.json"))
            .map_err(|e| format!("input '{model_input}': model.json: {e}"))?;
        let model = model_io::from_safetensors(&bytes, &meta).map_err(|e| e.to_string())?;
        let p = model
            .predict_proba(self.training_backend()?, self.tensor(&x)?)
            .map_err(|e| e.to_string())?;
        self.keep(p)
    }
}
