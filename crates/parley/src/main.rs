use clap::Parser;

fn main() -> std::process::ExitCode {
    parley::main(parley::cli::Cli::parse())
}
