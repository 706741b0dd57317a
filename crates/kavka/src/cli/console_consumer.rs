use clap::Args;

#[derive(Args)]
pub struct ConsoleConsumerArgs {
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
}

pub async fn run(_args: ConsoleConsumerArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
