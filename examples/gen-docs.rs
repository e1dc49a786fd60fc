//! Writes completions/ and man/ from the clap definition (run by `scripts/gen-docs`).

fn main() -> std::io::Result<()> {
    let root = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    warpgate::cli::docs::write_all(std::path::Path::new(&root))
}
