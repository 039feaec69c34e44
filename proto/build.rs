//! Generates Rust from the `.proto` files with a vendored `protoc`, so a build needs no system
//! protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // The profiler's JSON profile and the collector's store use these two messages as their own
    // types (one definition of a process and of the loss counters): they need serde, and
    // `serde(default)` so a document written before a field was added still reads.
    let serde = "#[derive(::serde::Serialize, ::serde::Deserialize)] #[serde(default)]";
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .type_attribute(".fleetprof.v1.Process", serde)
        .type_attribute(".fleetprof.v1.LossCounters", serde)
        .compile_protos(
            &[
                "proto/fleetprof/v1/ingest.proto",
                "proto/perftools/profiles/profile.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
