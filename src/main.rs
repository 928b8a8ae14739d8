//! The `autorender-sync` binary: all logic is in the library.

fn main() -> std::process::ExitCode {
    autorender_sync::cli::main()
}
