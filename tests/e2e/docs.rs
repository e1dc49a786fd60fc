//! The committed completions and man pages are exactly what the clap definition generates.
//! Regenerate with `scripts/gen-docs`.

#[test]
fn completions_and_man_pages_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, expected) in warpgate::cli::docs::render().unwrap() {
        let committed = std::fs::read(root.join(&name)).unwrap_or_default();
        assert!(
            committed == expected,
            "{name} is out of date: run scripts/gen-docs"
        );
    }
}
