//! The `syncgate` binary; the command line lives in [`syncgate::cli`].

fn main() -> std::process::ExitCode {
    syncgate::cli::main()
}
