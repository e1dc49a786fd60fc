//! Writes the seed corpus: `cargo run --manifest-path fuzz/Cargo.toml --example seeds` replaces
//! `fuzz/corpus/TARGET/` with the samples of each target (valid inputs in its layout).

use std::path::Path;

use warpgate_fuzz::{addr, check_samples, names, portmap, resume, signal, stun, Sample};

/// A target's name, its samples and its body.
type Target = (&'static str, fn() -> Vec<Sample>, fn(&[u8]) -> bool);

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let targets: [Target; 6] = [
        ("addr", addr::samples, addr::run),
        ("stun", stun::samples, stun::run),
        ("signal", signal::samples, signal::run),
        ("names", names::samples, names::run),
        ("resume", resume::samples, resume::run),
        ("portmap", portmap::samples, portmap::run),
    ];
    for (target, samples, run) in targets {
        check_samples(target, samples(), run);
        let dir = corpus.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let samples = samples();
        for (name, bytes) in &samples {
            std::fs::write(dir.join(name), bytes)?;
        }
        println!("{target}: {} seeds in {}", samples.len(), dir.display());
    }
    Ok(())
}
