fn main() {
    std::process::exit(sudo_agent::main(std::env::args_os()));
}
