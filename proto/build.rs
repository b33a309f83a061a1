// Compile shoal.proto in Rust (protox) so building Shoal never needs a system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=shoal.proto");
    let descriptors = protox::compile(["shoal.proto"], ["."])?;
    tonic_build::configure().compile_fds(descriptors)?;
    Ok(())
}
