use clap::Parser;
use mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

// The intake allocates many small strings per webhook; glibc's malloc contends on its arena
// locks under that load (measured with perf), mimalloc does not.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ROBOT_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,apalis=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = sales_robot::cli::Cli::parse();
    match sales_robot::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
