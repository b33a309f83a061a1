// Compile shoal.proto in Rust (protox) so building Shoal never needs a system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=shoal.proto");
    println!("cargo:rerun-if-changed=etcd_kv.proto");
    let descriptors = protox::compile(["shoal.proto"], ["."])?;
    // Messages that carry a secret's value get a hand-written Debug that
    // leaves it out (src/redacted.rs), so no log line can print it.
    tonic_build::configure()
        .skip_debug(".shoal.v1.CreateSecretRequest")
        .skip_debug(".shoal.v1.FileData")
        .compile_fds(descriptors)?;
    // etcd's Put, for the control-plane benchmark's same-run comparison.
    tonic_build::configure().build_server(false).compile_fds(protox::compile(["etcd_kv.proto"], ["."])?)?;
    Ok(())
}
