//! A feature-engineering step: standardises the CSV in input `data` into
//! `out/standardized.csv`. The work is in `core.rs`, shared with the native
//! build in the benchmark harness.

mod core;

fn run(ctx: &mut weir_sdk::Context<weir_sdk::serde_json::Value>) -> weir_sdk::Result<()> {
    let input =
        std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(ctx.input_file("data")?)?);
    let output = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(ctx.output("out")?.join("standardized.csv"))?,
    );
    let rows = core::standardize(input, output).map_err(weir_sdk::Error::msg)?;
    ctx.metric("rows", rows as f64);
    Ok(())
}

weir_sdk::step!(run);
