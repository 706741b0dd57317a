//! `kavka server [server.properties] [--override key=value]...`

use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ServerArgs {
    /// An Apache Kafka style server.properties file.
    pub config: Option<PathBuf>,
    /// Override a property, e.g. --override log.dirs=/var/lib/kavka (repeatable).
    #[arg(long = "override", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

pub fn run(_args: ServerArgs) -> anyhow::Result<()> {
    anyhow::bail!("the broker is not wired in yet")
}
