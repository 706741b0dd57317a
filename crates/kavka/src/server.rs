//! `kavka server [server.properties] [--override key=value]...`

use anyhow::Context;
use clap::Args;
use kavka_broker::config::BrokerConfig;
use std::path::PathBuf;

#[derive(Args)]
pub struct ServerArgs {
    /// An Apache Kafka style server.properties file (defaults apply without one).
    pub config: Option<PathBuf>,
    /// Override a property, e.g. --override log.dirs=/var/lib/kavka (repeatable).
    #[arg(long = "override", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KAVKA_LOG")
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_target(false)
        .init();
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => String::new(),
    };
    let (config, warnings) = BrokerConfig::from_properties(&text, &args.overrides)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kavka")
        .build()?;
    runtime.block_on(async move {
        let running = kavka_broker::start(config).await?;
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await;
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
