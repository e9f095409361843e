//! Compiles the client side of the protos in `../proto` (no server stubs), and their descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new("../proto/portcullis/v1");
    let mut protos = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            protos.push(path);
        }
    }
    protos.sort();
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // The descriptors too, for printing answers as the API's JSON.
    let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("portcullis_descriptor.bin");
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .file_descriptor_set_path(descriptors)
        .compile_with_config(config, &protos, &[std::path::PathBuf::from("../proto")])?;
    Ok(())
}
