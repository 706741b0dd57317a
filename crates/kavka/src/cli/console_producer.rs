use clap::Args;

#[derive(Args)]
pub struct ConsoleProducerArgs {
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
}

pub async fn run(_args: ConsoleProducerArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
