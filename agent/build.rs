//! Compiles the agent's side of the API: AgentService's client, from `../proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/portcullis/v1/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_server(false).build_transport(false).compile_with_config(
        config,
        &[proto],
        &["../proto"],
    )?;
    Ok(())
}
