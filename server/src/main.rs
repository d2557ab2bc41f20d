//! The `floodgate` binary. See `floodgate_server::cli`.

fn main() -> std::process::ExitCode {
    floodgate_server::cli::main()
}
