//! The `floodgate` binary. See `floodgate_server::cli`.

/// mimalloc, not the system allocator: see the root Cargo.toml's profile note.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    floodgate_server::cli::main()
}
