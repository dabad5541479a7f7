//! The `kstash` binary: server and CLI.

fn main() -> std::process::ExitCode {
    kstash::cli::main()
}
