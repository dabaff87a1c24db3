//! Trainers built only from [`Backend`] kernels, so every backend trains the
//! same way: logistic regression (binary or multinomial, L2) and an MLP
//! classifier (ReLU hidden layers, softmax output, minibatches).
//!
//! Both are deterministic for a fixed seed on a given backend: shuffling
//! and initialisation come from a seeded ChaCha generator, and the kernels
//! never reduce in thread-dependent order.

use crate::backend::OptState;
use crate::{Backend, KernelError, Matrix, Optimizer, Result};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// Settings of [`logistic_regression`].
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Rows per minibatch; 0 trains on the whole set each step.
    pub batch_size: usize,
    /// Update rule.
    pub optimizer: Optimizer,
    /// L2 penalty on the weights (not the bias).
    pub l2: f32,
    /// Seed for shuffling.
    pub seed: u64,
}

impl Default for LogisticConfig {
    fn default() -> LogisticConfig {
        LogisticConfig {
            epochs: 100,
            batch_size: 0,
            optimizer: Optimizer::adam(0.05),
            l2: 1e-4,
            seed: 0,
        }
    }
}

/// Settings of [`mlp`].
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// Widths of the hidden layers.
    pub hidden: Vec<usize>,
    /// Passes over the data.
    pub epochs: usize,
    /// Rows per minibatch; 0 trains on the whole set each step.
    pub batch_size: usize,
    /// Update rule.
    pub optimizer: Optimizer,
    /// L2 penalty on the weights (not the biases).
    pub l2: f32,
    /// Seed for initialisation and shuffling.
    pub seed: u64,
}

impl Default for MlpConfig {
    fn default() -> MlpConfig {
        MlpConfig {
            hidden: vec![32],
            epochs: 100,
            batch_size: 64,
            optimizer: Optimizer::adam(0.01),
            l2: 1e-4,
            seed: 0,
        }
    }
}

/// How a model is fitted (shared by both trainers).
struct Schedule {
    epochs: usize,
    batch_size: usize,
    optimizer: Optimizer,
    l2: f32,
}

/// A trained classifier: dense layers (weights `in x out`, biases), ReLU
/// between them, and a sigmoid (one output) or softmax output.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Weights per layer.
    pub weights: Vec<Matrix>,
    /// Biases per layer.
    pub biases: Vec<Vec<f32>>,
    /// Number of classes.
    pub classes: usize,
    /// Mean training loss after each epoch.
    pub loss_history: Vec<f32>,
}

fn check_data(x: &Matrix, y: &[usize], classes: usize) -> Result<()> {
    if x.rows() == 0 || x.cols() == 0 {
        return Err(KernelError::Invalid("training data is empty".into()));
    }
    if y.len() != x.rows() {
        return Err(KernelError::Shape {
            op: "train",
            expected: format!("{} labels (one per row)", x.rows()),
            found: format!("{} labels", y.len()),
        });
    }
    if classes < 2 {
        return Err(KernelError::Invalid(format!(
            "a classifier needs at least 2 classes, found {classes}"
        )));
    }
    if let Some((i, y)) = y.iter().enumerate().find(|(_, y)| **y >= classes) {
        return Err(KernelError::Invalid(format!(
            "label {y} of row {i} is not below the class count {classes}"
        )));
    }
    Ok(())
}

impl Model {
    fn binary(&self) -> bool {
        self.classes == 2 && self.weights.last().is_some_and(|w| w.cols() == 1)
    }

    /// Forward pass; returns the activations of every layer (the last is the
    /// probabilities: n x 1 for a binary model, n x classes otherwise).
    fn forward(&self, be: &dyn Backend, x: &Matrix) -> Result<Vec<Matrix>> {
        let mut acts: Vec<Matrix> = Vec::with_capacity(self.weights.len());
        for (l, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            let input = if l == 0 { x } else { &acts[l - 1] };
            let mut z = Matrix::zeros(input.rows(), w.cols());
            be.gemm(1.0, input, false, w, false, 0.0, &mut z)?;
            be.add_row_vector(&mut z, b)?;
            if l + 1 < self.weights.len() {
                be.relu(&mut z)?;
            } else if self.binary() {
                be.sigmoid(&mut z)?;
            } else {
                be.softmax_rows(&mut z)?;
            }
            acts.push(z);
        }
        Ok(acts)
    }

    /// Class probabilities, one row per input row (n x classes).
    pub fn predict_proba(&self, be: &dyn Backend, x: &Matrix) -> Result<Matrix> {
        let p = self
            .forward(be, x)?
            .pop()
            .ok_or_else(|| KernelError::Invalid("model has no layers".into()))?;
        if !self.binary() {
            return Ok(p);
        }
        let mut two = Matrix::zeros(p.rows(), 2);
        for (i, q) in p.as_slice().iter().enumerate() {
            two.as_mut_slice()[2 * i] = 1.0 - q;
            two.as_mut_slice()[2 * i + 1] = *q;
        }
        Ok(two)
    }

    /// The most probable class of each row.
    pub fn predict(&self, be: &dyn Backend, x: &Matrix) -> Result<Vec<usize>> {
        let p = self.predict_proba(be, x)?;
        Ok((0..p.rows())
            .map(|i| {
                p.row(i)
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (k, v)| {
                        if *v > best.1 { (k, *v) } else { best }
                    })
                    .0
            })
            .collect())
    }

    /// Mean loss (cross-entropy plus `l2/2 * |W|^2`) on `(x, y)` and its
    /// gradients with respect to every weight and bias, by backpropagation.
    pub fn loss_and_gradients(
        &self,
        be: &dyn Backend,
        x: &Matrix,
        y: &[usize],
        l2: f32,
    ) -> Result<(f32, Vec<Matrix>, Vec<Vec<f32>>)> {
        let acts = self.forward(be, x)?;
        let last = acts.len() - 1;
        let mut delta = Matrix::zeros(acts[last].rows(), acts[last].cols());
        let mut loss = if self.binary() {
            be.binary_cross_entropy(&acts[last], y, &mut delta)?
        } else {
            be.cross_entropy(&acts[last], y, &mut delta)?
        };
        let mut gw: Vec<Matrix> = self
            .weights
            .iter()
            .map(|w| Matrix::zeros(w.rows(), w.cols()))
            .collect();
        let mut gb: Vec<Vec<f32>> = self.biases.iter().map(|b| vec![0.0; b.len()]).collect();
        for l in (0..self.weights.len()).rev() {
            let input = if l == 0 { x } else { &acts[l - 1] };
            be.gemm(1.0, input, true, &delta, false, 0.0, &mut gw[l])?;
            be.column_sums(&delta, &mut gb[l])?;
            if l > 0 {
                let mut prev = Matrix::zeros(delta.rows(), self.weights[l].rows());
                be.gemm(1.0, &delta, false, &self.weights[l], true, 0.0, &mut prev)?;
                be.relu_backward(&mut prev, &acts[l - 1])?;
                delta = prev;
            }
        }
        if l2 > 0.0 {
            for (w, g) in self.weights.iter().zip(gw.iter_mut()) {
                loss += 0.5 * l2 * w.as_slice().iter().map(|v| v * v).sum::<f32>();
                for (gi, wi) in g.as_mut_slice().iter_mut().zip(w.as_slice()) {
                    *gi += l2 * wi;
                }
            }
        }
        Ok((loss, gw, gb))
    }

    fn fit(
        &mut self,
        be: &dyn Backend,
        x: &Matrix,
        y: &[usize],
        plan: &Schedule,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        let (epochs, opt, l2) = (plan.epochs, &plan.optimizer, plan.l2);
        let n = x.rows();
        let batch = if plan.batch_size == 0 {
            n
        } else {
            plan.batch_size.min(n)
        };
        let mut w_state: Vec<OptState> = self
            .weights
            .iter()
            .map(|w| OptState::new(w.as_slice().len()))
            .collect();
        let mut b_state: Vec<OptState> =
            self.biases.iter().map(|b| OptState::new(b.len())).collect();
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..epochs {
            // Fisher-Yates with the seeded generator.
            for i in (1..n).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            let mut total = 0.0f64;
            for chunk in order.chunks(batch) {
                let xb = x.gather_rows(chunk);
                let yb: Vec<usize> = chunk.iter().map(|&i| y[i]).collect();
                // The L2 term is applied by the optimizer step (as weight decay).
                let (loss, gw, gb) = self.loss_and_gradients(be, &xb, &yb, 0.0)?;
                total += loss as f64 * chunk.len() as f64;
                for l in 0..self.weights.len() {
                    be.update(
                        opt,
                        &mut w_state[l],
                        self.weights[l].as_mut_slice(),
                        gw[l].as_slice(),
                        l2,
                    )?;
                    be.update(opt, &mut b_state[l], &mut self.biases[l], &gb[l], 0.0)?;
                }
            }
            self.loss_history.push((total / n as f64) as f32);
        }
        Ok(())
    }
}

/// Trains logistic regression: one sigmoid output for two classes, a
/// softmax over `classes` outputs otherwise.
pub fn logistic_regression(
    be: &dyn Backend,
    x: &Matrix,
    y: &[usize],
    classes: usize,
    cfg: &LogisticConfig,
) -> Result<Model> {
    check_data(x, y, classes)?;
    let outputs = if classes == 2 { 1 } else { classes };
    let mut model = Model {
        weights: vec![Matrix::zeros(x.cols(), outputs)],
        biases: vec![vec![0.0; outputs]],
        classes,
        loss_history: Vec::new(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let plan = Schedule {
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        optimizer: cfg.optimizer,
        l2: cfg.l2,
    };
    model.fit(be, x, y, &plan, &mut rng)?;
    Ok(model)
}

/// Trains an MLP classifier with ReLU hidden layers and a softmax output
/// (He-uniform initialisation from the seed).
pub fn mlp(
    be: &dyn Backend,
    x: &Matrix,
    y: &[usize],
    classes: usize,
    cfg: &MlpConfig,
) -> Result<Model> {
    check_data(x, y, classes)?;
    if cfg.hidden.contains(&0) {
        return Err(KernelError::Invalid(
            "hidden layer widths must be at least 1".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut sizes = vec![x.cols()];
    sizes.extend(&cfg.hidden);
    sizes.push(classes);
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    for w in sizes.windows(2) {
        let bound = (6.0 / w[0] as f32).sqrt();
        let data = (0..w[0] * w[1])
            .map(|_| ((rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * bound)
            .collect();
        weights.push(Matrix::from_vec(w[0], w[1], data)?);
        biases.push(vec![0.0; w[1]]);
    }
    let mut model = Model {
        weights,
        biases,
        classes,
        loss_history: Vec::new(),
    };
    let plan = Schedule {
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        optimizer: cfg.optimizer,
        l2: cfg.l2,
    };
    model.fit(be, x, y, &plan, &mut rng)?;
    Ok(model)
}

/// Share of `predicted` equal to `truth`.
pub fn accuracy(predicted: &[usize], truth: &[usize]) -> f32 {
    if truth.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(truth).filter(|(a, b)| a == b).count() as f32 / truth.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend;

    /// Seeded synthetic data: `kind` 0 = blobs (linearly separable-ish),
    /// 1 = concentric rings (not linearly separable).
    fn data(n: usize, kind: u8, seed: u64) -> (Matrix, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut u = || (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..n {
            let class = i % 2;
            let (a, b) = if kind == 0 {
                let c = if class == 0 { -1.5 } else { 1.5 };
                (c + (u() - 0.5) * 2.0, c + (u() - 0.5) * 2.0)
            } else {
                let r = if class == 0 { 1.0 } else { 2.5 } + (u() - 0.5) * 0.6;
                let t = u() * std::f32::consts::TAU;
                (r * t.cos(), r * t.sin())
            };
            xs.extend([a, b]);
            ys.push(class);
        }
        (Matrix::from_vec(n, 2, xs).unwrap(), ys)
    }

    /// Relative errors between backprop and central differences, one per parameter.
    #[allow(clippy::needless_range_loop)]
    fn gradient_errors(model: &Model, x: &Matrix, y: &[usize]) -> Vec<f32> {
        let be = CpuBackend::new();
        let l2 = 0.01;
        let (_, gw, gb) = model.loss_and_gradients(&be, x, y, l2).unwrap();
        let eps = 1e-3;
        let mut errors = Vec::new();
        for l in 0..model.weights.len() {
            for i in 0..model.weights[l].as_slice().len() {
                let mut plus = model.clone();
                plus.weights[l].as_mut_slice()[i] += eps;
                let mut minus = model.clone();
                minus.weights[l].as_mut_slice()[i] -= eps;
                let numeric = (plus.loss_and_gradients(&be, x, y, l2).unwrap().0
                    - minus.loss_and_gradients(&be, x, y, l2).unwrap().0)
                    / (2.0 * eps);
                let analytic = gw[l].as_slice()[i];
                errors
                    .push((numeric - analytic).abs() / (numeric.abs() + analytic.abs()).max(1e-2));
            }
            for i in 0..model.biases[l].len() {
                let mut plus = model.clone();
                plus.biases[l][i] += eps;
                let mut minus = model.clone();
                minus.biases[l][i] -= eps;
                let numeric = (plus.loss_and_gradients(&be, x, y, l2).unwrap().0
                    - minus.loss_and_gradients(&be, x, y, l2).unwrap().0)
                    / (2.0 * eps);
                errors
                    .push((numeric - gb[l][i]).abs() / (numeric.abs() + gb[l][i].abs()).max(1e-2));
            }
        }
        errors
    }

    fn worst(e: &[f32]) -> f32 {
        e.iter().copied().fold(0.0, f32::max)
    }

    #[test]
    fn gradients_match_finite_differences() {
        let be = CpuBackend::new();
        let (x, y) = data(12, 1, 7);
        // Barely trained, so gradients are not near zero.
        let mut mlp_model = mlp(
            &be,
            &x,
            &y,
            2,
            &MlpConfig {
                hidden: vec![5, 4],
                epochs: 1,
                seed: 3,
                ..Default::default()
            },
        )
        .unwrap();
        // Positive biases keep hidden units away from the ReLU kink at 0,
        // where central differences are not the derivative.
        for b in &mut mlp_model.biases {
            for (i, v) in b.iter_mut().enumerate() {
                *v += 0.3 + 0.05 * i as f32;
            }
        }
        let e = worst(&gradient_errors(&mlp_model, &x, &y));
        assert!(e < 2e-2, "MLP gradient relative error {e}");
        let y3: Vec<usize> = (0..12).map(|i| i % 3).collect();
        let multi = logistic_regression(
            &be,
            &x,
            &y3,
            3,
            &LogisticConfig {
                epochs: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let e = worst(&gradient_errors(&multi, &x, &y3));
        assert!(e < 2e-2, "multinomial LR gradient relative error {e}");
        let bin = logistic_regression(
            &be,
            &x,
            &y,
            2,
            &LogisticConfig {
                epochs: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let e = worst(&gradient_errors(&bin, &x, &y));
        assert!(e < 2e-2, "binary LR gradient relative error {e}");
    }

    #[test]
    fn logistic_regression_separates_blobs_and_the_mlp_learns_rings() {
        let be = CpuBackend::new();
        let (x, y) = data(400, 0, 1);
        let (xt, yt) = data(200, 0, 2);
        let lr = logistic_regression(&be, &x, &y, 2, &LogisticConfig::default()).unwrap();
        let acc = accuracy(&lr.predict(&be, &xt).unwrap(), &yt);
        assert!(acc > 0.9, "LR accuracy on blobs {acc}");
        assert!(lr.loss_history.first() > lr.loss_history.last());

        let (x, y) = data(600, 1, 3);
        let (xt, yt) = data(300, 1, 4);
        let linear = logistic_regression(&be, &x, &y, 2, &LogisticConfig::default()).unwrap();
        let lin_acc = accuracy(&linear.predict(&be, &xt).unwrap(), &yt);
        let net = mlp(
            &be,
            &x,
            &y,
            2,
            &MlpConfig {
                hidden: vec![16, 16],
                epochs: 150,
                ..Default::default()
            },
        )
        .unwrap();
        let mlp_acc = accuracy(&net.predict(&be, &xt).unwrap(), &yt);
        assert!(mlp_acc > 0.95, "MLP accuracy on rings {mlp_acc}");
        assert!(
            lin_acc < 0.75,
            "rings should defeat a linear model, got {lin_acc}"
        );
    }

    #[test]
    fn training_is_deterministic_for_a_seed_and_checks_its_input() {
        let be = CpuBackend::new();
        let (x, y) = data(100, 1, 9);
        let cfg = MlpConfig {
            hidden: vec![8],
            epochs: 5,
            batch_size: 16,
            seed: 42,
            ..Default::default()
        };
        let a = mlp(&be, &x, &y, 2, &cfg).unwrap();
        let b = mlp(&be, &x, &y, 2, &cfg).unwrap();
        assert_eq!(a, b);
        let c = mlp(
            &be,
            &x,
            &y,
            2,
            &MlpConfig {
                seed: 43,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert_ne!(a.weights, c.weights);
        let e = mlp(&be, &x, &y[..10], 2, &cfg).unwrap_err().to_string();
        assert!(e.contains("expected 100 labels"), "{e}");
        let e = logistic_regression(&be, &x, &vec![5; 100], 2, &LogisticConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 5 of row 0"), "{e}");
    }
}
