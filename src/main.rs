//! The `autorender-sync` binary: all logic is in the library.

fn main() -> std::process::ExitCode {
    // The moment this process started, before anything else runs.
    autorender_sync::clock::launched_ms();
    autorender_sync::cli::main()
}
