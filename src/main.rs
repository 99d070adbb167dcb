fn main() {
    std::process::exit(sudo_agent::cli::main(std::env::args_os()));
}
