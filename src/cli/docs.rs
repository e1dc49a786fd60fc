//! Shell completions (bash, zsh, fish) and man pages generated from the clap definition, so they
//! never drift from the real options. `scripts/gen-docs` writes them; a test checks the committed
//! copies are current.

use std::path::Path;

use clap::CommandFactory;

use super::args::Cli;

/// Every generated file: (path relative to the repository root, contents).
pub fn render() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for (shell, name) in [
        (clap_complete::Shell::Bash, "completions/warpgate.bash"),
        (clap_complete::Shell::Zsh, "completions/_warpgate"),
        (clap_complete::Shell::Fish, "completions/warpgate.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "warpgate", &mut out);
        files.push((name.to_string(), out));
    }
    let command = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    files.push(("man/warpgate.1".to_string(), page));
    for sub in command.get_subcommands() {
        let name = format!("warpgate-{}", sub.get_name());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name.clone())).render(&mut page)?;
        files.push((format!("man/{name}.1"), page));
    }
    Ok(files)
}

/// Writes every generated file under `root`.
pub fn write_all(root: &Path) -> std::io::Result<()> {
    for (name, contents) in render()? {
        let path = root.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, contents)?;
    }
    Ok(())
}
