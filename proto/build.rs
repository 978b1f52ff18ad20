//! Compiles `proto/warden/v1/warden.proto` with protox (pure Rust, so no `protoc` is needed) and
//! generates prost messages, plus tonic stubs when the `grpc` feature is on.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/warden/v1/warden.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .build_transport(grpc)
        .compile_fds(descriptors)?;
    Ok(())
}
