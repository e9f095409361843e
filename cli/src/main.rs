//! The `pcl` binary.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pcl::main().await
}
