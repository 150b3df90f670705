use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = match parley::config::expand_args(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("parley: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    parley::main(parley::cli::Cli::parse_from(args))
}
