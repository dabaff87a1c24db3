//! `weir-example-http [--project DIR] [--store DIR] [--bind ADDR]`: serves
//! `POST /runs` (see the library docs). Try it:
//!
//! ```sh
//! cargo run -p weir-example-http -- --project examples/hello &
//! curl -N localhost:8790/runs -d "{\"script\": $(jq -Rs . < examples/hello/pipeline.rhai)}"
//! ```

use std::path::PathBuf;
use weir_example_http::{Service, app};
use weir_runtime::{Config, Runtime};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut project = PathBuf::from(".");
    let mut store = None;
    let mut bind = "127.0.0.1:8790".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--project" => project = PathBuf::from(value()?),
            "--store" => store = Some(PathBuf::from(value()?)),
            "--bind" => bind = value()?,
            other => {
                anyhow::bail!("unknown argument {other:?} (expected --project, --store, --bind)")
            }
        }
    }
    let store = store.unwrap_or_else(|| project.join(".weir"));
    let runtime = Runtime::new(&Config::new(store))?;
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    eprintln!("weir-example-http on http://{}", listener.local_addr()?);
    axum::serve(listener, app(Service::new(runtime, project))).await?;
    Ok(())
}
