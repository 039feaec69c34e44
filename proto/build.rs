//! Generates Rust from the `.proto` files with a vendored `protoc`, so a build needs no system
//! protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(
            &[
                "proto/fleetprof/v1/ingest.proto",
                "proto/perftools/profiles/profile.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
