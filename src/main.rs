//! The `kstash` binary: server and CLI.

/// mimalloc instead of the system allocator: the server's hot paths (gRPC,
/// Raft messages, log entries) allocate and free many short-lived buffers
/// from several threads, where glibc's malloc was the largest user-space
/// cost in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kstash::cli::main()
}
