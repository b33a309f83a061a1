//! The container shim as its own binary, for the runtime's tests and
//! benchmark; in production the `shoal` binary runs it as `shoal __shim`.

fn main() -> std::process::ExitCode {
    shoal_runtime::shim::main(std::env::args().skip(1).collect())
}
