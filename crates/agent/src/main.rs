fn main() -> std::process::ExitCode {
    atelier_agent::main_entry()
}
