//! `warpgate registry serve`: runs a name registry ([`crate::registry`]) until SIGINT or
//! SIGTERM, then drains it and exits 0. Says where it listens (the real port for `--bind
//! …:0`) as a `registry` event, so scripts and tests need not guess.

use std::process::ExitCode;

use super::args::{Global, ServeArgs};
use super::Shutdown;
use crate::registry::rules::Policy;
use crate::registry::{Options, Server, TlsFiles};
use crate::report::Reporter;

pub async fn serve(
    global: &Global,
    args: ServeArgs,
    reporter: Reporter,
    shutdown: &Shutdown,
) -> anyhow::Result<ExitCode> {
    let db = match args.db {
        Some(db) => db,
        None => home(global)?.join("registry.db"),
    };
    let tls = match (args.cert, args.key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let options = Options {
        bind: args.bind,
        db,
        tls,
        policy: Policy {
            grace: args.grace,
            max_names: args.max_names,
        },
        writes_per_minute: args.writes_per_minute,
    };
    let server = Server::bind(&options).await?;
    // From here on there is a server to drain when told to stop.
    let _holding = shutdown.hold();
    reporter.registry(
        &server.local_addr().to_string(),
        &options.db.display().to_string(),
        options.tls.is_some(),
    );
    server.run(shutdown.token()).await;
    Ok(ExitCode::SUCCESS)
}

/// The home directory, where the database lives unless `--db` says otherwise.
fn home(global: &Global) -> anyhow::Result<std::path::PathBuf> {
    Ok(super::settings(global)?.home)
}
