//! Generates a realistic, seeded customer-churn table, so the example needs
//! no download: numeric and categorical columns, a few missing values and a
//! class imbalance (about one customer in four churns). The same params
//! always give the same bytes.

use weir_sdk::dataset::Table;
use weir_sdk::{Context, Result, bail};

#[derive(serde::Deserialize)]
struct Params {
    rows: u32,
    seed: u64,
}

/// splitmix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-12);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Picks an index by weight.
    fn pick(&mut self, weights: &[f64]) -> usize {
        let mut u = self.uniform() * weights.iter().sum::<f64>();
        for (i, w) in weights.iter().enumerate() {
            if u < *w {
                return i;
            }
            u -= w;
        }
        weights.len() - 1
    }
    /// Poisson by inversion (small means).
    fn poisson(&mut self, mean: f64) -> u32 {
        let (mut k, mut p, mut s) = (0u32, (-mean).exp(), (-mean).exp());
        let u = self.uniform();
        while u > s && k < 50 {
            k += 1;
            p *= mean / k as f64;
            s += p;
        }
        k
    }
}

const CONTRACTS: [&str; 3] = ["month_to_month", "one_year", "two_year"];
const INTERNET: [&str; 3] = ["fiber", "dsl", "none"];
const PAYMENT: [&str; 4] = [
    "electronic_check",
    "mailed_check",
    "bank_transfer",
    "credit_card",
];

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let p = ctx.params();
    if p.rows == 0 || p.rows > 10_000_000 {
        bail!(
            "param 'rows' must be between 1 and 10000000, found {}",
            p.rows
        );
    }
    let mut rng = Rng(p.seed);
    let columns = [
        "customer_id",
        "age",
        "senior",
        "tenure_months",
        "contract",
        "internet_service",
        "payment_method",
        "monthly_charges",
        "total_charges",
        "support_calls",
        "churned",
    ];
    let mut table = Table {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: Vec::with_capacity(p.rows as usize),
    };
    let mut churners = 0u32;
    for i in 0..p.rows {
        let age = 18.0 + (rng.uniform() * 62.0).floor();
        let senior = (age >= 65.0) as u8;
        let tenure = (72.0 * rng.uniform().powf(1.3)).floor();
        let contract = rng.pick(&[0.55, 0.25, 0.20]);
        let internet = rng.pick(&[0.45, 0.35, 0.20]);
        let payment = rng.pick(&[0.35, 0.20, 0.22, 0.23]);
        let base = match internet {
            0 => 70.0 + 40.0 * rng.uniform(),
            1 => 40.0 + 35.0 * rng.uniform(),
            _ => 18.0 + 12.0 * rng.uniform(),
        };
        let monthly = ((base + 4.0 * rng.normal()).max(15.0) * 100.0).round() / 100.0;
        let total = ((tenure * monthly * (0.95 + 0.1 * rng.uniform())) * 100.0).round() / 100.0;
        let calls = rng.poisson(if internet == 0 { 2.2 } else { 1.3 });
        let logit = -1.9 + 1.4 * (contract == 0) as u8 as f64
            - 1.0 * (contract == 2) as u8 as f64
            - 0.045 * tenure
            + 0.015 * (monthly - 65.0)
            + 0.38 * calls as f64
            + 0.45 * (internet == 0) as u8 as f64
            + 0.5 * (payment == 0) as u8 as f64
            + 0.35 * senior as f64
            + 0.5 * rng.normal();
        let churned = rng.uniform() < 1.0 / (1.0 + (-logit).exp());
        churners += churned as u32;
        // Missing values, as real exports have them.
        let missing = |rng: &mut Rng, rate: f64, v: String| {
            if rng.uniform() < rate {
                String::new()
            } else {
                v
            }
        };
        table.rows.push(vec![
            format!("C{:07}", i + 1),
            missing(&mut rng, 0.03, format!("{age}")),
            senior.to_string(),
            format!("{tenure}"),
            CONTRACTS[contract].to_string(),
            INTERNET[internet].to_string(),
            missing(&mut rng, 0.02, PAYMENT[payment].to_string()),
            format!("{monthly}"),
            if tenure == 0.0 {
                String::new()
            } else {
                missing(&mut rng, 0.01, format!("{total}"))
            },
            calls.to_string(),
            (churned as u8).to_string(),
        ]);
    }
    let out = ctx.output("data")?.join("customers.parquet");
    table.write_parquet(&out)?;
    let rate = churners as f64 / p.rows as f64;
    ctx.info(format!(
        "generated {} customers, churn rate {:.1}%",
        p.rows,
        100.0 * rate
    ));
    ctx.metric("rows", p.rows as f64);
    ctx.metric("churn_rate", rate);
    Ok(())
}

weir_sdk::step!(run);
