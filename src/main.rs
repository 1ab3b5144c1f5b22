fn main() -> std::process::ExitCode {
    syncgate::cli::main()
}
