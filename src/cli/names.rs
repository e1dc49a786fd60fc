//! `warpgate name …` and name resolution for `connect`: claim, lookup and release against every
//! configured registry (verdicts by majority, [`crate::names::resolve`]), local aliases and
//! pins (`<home>/aliases`, `<home>/known_names`). What a command found goes to stdout, as
//! lines or (with `--json`) one JSON document; failures are the usual one-line error.
//!
//! Exit codes: 2 for a bad name or address, and when no registry can be asked (none
//! configured, or `--offline`): the invocation has to change. 1 when the name is another key's,
//! when a resolved key differs from the pinned one, and when no majority of registries
//! answered.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use super::args::NameCommand;
use super::publish::{self, now_secs, sign_record, utc};
use super::{usage, Node};
use crate::addr::Address;
use crate::names::client::{self, ClientError, PutOutcome};
use crate::names::pins::{Aliases, Pins, Value as _};
use crate::names::resolve::{self, Answer, Outcome, Resolution, Verdict};
use crate::names::{Name, Release};
use crate::report::{Reporter, Resolved};

pub async fn run(
    node: Node,
    command: NameCommand,
    reporter: &Reporter,
) -> anyhow::Result<ExitCode> {
    match command {
        NameCommand::Claim { name, lifetime } => {
            claim(&node, &parse_name(&name)?, lifetime, reporter).await
        }
        NameCommand::Lookup { name } => lookup(&node, &parse_name(&name)?, reporter).await,
        NameCommand::Release { name } => release(&node, &parse_name(&name)?, reporter).await,
        NameCommand::Add { alias, address } => add(&node, &parse_name(&alias)?, &address, reporter),
        NameCommand::List => list(&node, reporter),
        NameCommand::Forget { name } => forget(&node, &parse_name(&name)?, reporter),
    }
}

/// A name from the command line; a bad one is a usage error.
pub(super) fn parse_name(text: &str) -> anyhow::Result<Name> {
    Name::parse(text).map_err(|e| usage(e.to_string()))
}

/// Writes a command's result to stdout; a reader that went away is no failure.
fn print(text: &str) -> anyhow::Result<ExitCode> {
    match writeln!(std::io::stdout().lock(), "{}", text.trim_end()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// What one registry did with a claim or release: its outcome word and, for humans, any
/// detail; or why it did not.
type Done = Result<(&'static str, String), ClientError>;

/// Prints what each registry did with `what` (a claim or release of `name`), as lines or as
/// one JSON document (`fields` plus the per-registry outcomes), then judges by majority:
/// exit 0, or the one-line error naming the owner or the failures.
fn conclude(
    what: &str,
    name: &Name,
    urls: &[String],
    done: &[Done],
    mut fields: serde_json::Value,
    reporter: &Reporter,
) -> anyhow::Result<ExitCode> {
    let verdict = resolve::tally(&done.iter().map(Outcome::from).collect::<Vec<_>>());
    let majority = matches!(verdict, Verdict::Quorum { .. });
    let text = if reporter.json {
        let per: Vec<_> = urls
            .iter()
            .zip(done)
            .map(|(url, d)| {
                let owner = match d {
                    Err(ClientError::Taken { owner }) => Some(owner),
                    _ => None,
                };
                json!({
                    "registry": url,
                    "outcome": d.as_ref().ok().map(|(word, _)| word),
                    "error": d.as_ref().err().map(ToString::to_string),
                    "owner": owner,
                })
            })
            .collect();
        fields["name"] = name.to_string().into();
        fields["registries"] = per.into();
        fields["majority"] = majority.into();
        fields.to_string()
    } else {
        let lines: Vec<String> = urls
            .iter()
            .zip(done)
            .map(|(url, d)| match d {
                Ok((word, detail)) => format!("{name}: {word} on {url}{detail}"),
                Err(e) => format!("{name}: {url}: {e}"),
            })
            .collect();
        lines.join("\n")
    };
    print(&text)?;
    match verdict {
        Verdict::Quorum { .. } => Ok(ExitCode::SUCCESS),
        Verdict::Taken { owner } => Err(anyhow::anyhow!(
            "{name} belongs to another key (fingerprint {owner}): {what} refused"
        )),
        Verdict::NoQuorum {
            accepted,
            configured,
        } => {
            let failures: Vec<String> = urls
                .iter()
                .zip(done)
                .filter_map(|(url, d)| d.as_ref().err().map(|e| format!("{url}: {e}")))
                .collect();
            Err(anyhow::anyhow!(
                "{what} of {name} reached {accepted} of {configured} registries, fewer than half ({})",
                failures.join("; ")
            ))
        }
    }
}

async fn claim(
    node: &Node,
    name: &Name,
    lifetime: u64,
    reporter: &Reporter,
) -> anyhow::Result<ExitCode> {
    let registries = node.registries("name claim")?;
    let port = node.default_port();
    let look = node.look(port).await;
    let address = node.address(port, &look, &[])?;
    let seq = publish::sequence(0);
    let (record, bytes) = sign_record(&node.identity, name, address, seq, lifetime)?;
    let done: Vec<Done> = client::put_all(&registries, name, &bytes)
        .await
        .into_iter()
        .map(|result| {
            result.map(|stored| {
                let word = match stored.outcome {
                    PutOutcome::Claimed => "claimed",
                    PutOutcome::Renewed => "renewed",
                    PutOutcome::Unchanged => "unchanged",
                };
                let detail = format!(" (seq {}, expires {})", stored.seq, utc(stored.expires_at));
                (word, detail)
            })
        })
        .collect();
    let fields = json!({
        "id": node.identity.id(),
        "fingerprint": record.key.fingerprint(),
        "seq": record.seq,
        "issued_at": record.issued_at,
        "expires_at": record.expires_at,
    });
    conclude(
        "claim",
        name,
        &node.settings.registries,
        &done,
        fields,
        reporter,
    )
}

async fn release(node: &Node, name: &Name, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let registries = node.registries("name release")?;
    let release = Release {
        name: name.clone(),
        key: node.identity.public_key(),
        seq: publish::sequence(0),
        issued_at: now_secs(),
    };
    let bytes = release.sign(&node.identity)?;
    let done: Vec<Done> = client::delete_all(&registries, name, &bytes)
        .await
        .into_iter()
        .map(|result| match result {
            Ok(()) => Ok(("released", String::new())),
            // Not held there is as good as released: the name is not ours on that registry.
            Err(ClientError::NotHeld) => Ok(("not held", String::new())),
            Err(e) => Err(e),
        })
        .collect();
    conclude(
        "release",
        name,
        &node.settings.registries,
        &done,
        json!({}),
        reporter,
    )
}

/// What a name resolves to.
pub(super) enum Found {
    Alias(Address),
    Registry {
        resolution: Resolution,
        asked: usize,
    },
}

impl Found {
    pub fn address(&self) -> &Address {
        match self {
            Found::Alias(address) => address,
            Found::Registry { resolution, .. } => &resolution.record.address,
        }
    }

    /// The `resolved` event for `name`, resolved in `took`.
    pub fn event(&self, name: &Name, took: std::time::Duration) -> Resolved {
        let (source, asked, agreeing, pinned_now) = match self {
            Found::Alias(_) => ("alias", 0, 0, false),
            Found::Registry { resolution, asked } => (
                "registry",
                *asked,
                resolution.agreeing.len(),
                !resolution.was_pinned,
            ),
        };
        Resolved {
            name: name.to_string(),
            id: self.address().id().to_string(),
            source,
            asked,
            agreeing,
            pinned_now,
            resolve_ms: took.as_millis() as u64,
        }
    }
}

/// Resolves `name` the way `connect` does: a local alias first (no registry asked); else every
/// registry at once, each record verified, chosen by pin or majority; a first resolution pins
/// the key.
pub(super) async fn resolve_name(node: &Node, name: &Name) -> anyhow::Result<Found> {
    let home = &node.settings.home;
    let aliases = Aliases::load_aliases(home).context("cannot read the aliases")?;
    if let Some(address) = aliases.get(name) {
        return Ok(Found::Alias(address.clone()));
    }
    if node.settings.offline {
        return Err(usage(format!(
            "{name} is not a local alias, and with --offline names resolve through aliases only (add one: warpgate name add {name} ADDRESS)"
        )));
    }
    let registries = node.registries(&format!("resolving {name}"))?;
    let got = client::get_all(&registries, name).await;
    let answers: Vec<(String, Answer)> = node
        .settings
        .registries
        .iter()
        .cloned()
        .zip(got.into_iter().map(Answer::from))
        .collect();
    let mut pins = Pins::load_pins(home).context("cannot read the pinned name keys")?;
    let resolution = resolve::resolve(name, &answers, pins.get(name), now_secs())?;
    for (registry, why) in &resolution.set_aside {
        tracing::warn!("{name}: {registry} {why}");
    }
    if !resolution.was_pinned {
        pins.set(name, resolution.record.key);
        pins.save()
            .with_context(|| format!("cannot save the pin in {}", pins.path().display()))?;
        tracing::info!(
            "{name}: pinned key {} on first use",
            resolution.record.key.fingerprint()
        );
    }
    Ok(Found::Registry {
        resolution,
        asked: answers.len(),
    })
}

async fn lookup(node: &Node, name: &Name, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let found = resolve_name(node, name).await?;
    let address = found.address();
    let key = address.key.fingerprint();
    let text = match (&found, reporter.json) {
        (Found::Alias(_), true) => json!({
            "name": name.to_string(),
            "source": "alias",
            "fingerprint": key,
            "id": address.id(),
            "addr": address.to_string(),
        })
        .to_string(),
        (Found::Registry { resolution, asked }, true) => {
            let r = &resolution.record;
            json!({
                "name": name.to_string(),
                "source": "registry",
                "fingerprint": key,
                "id": address.id(),
                "addr": address.to_string(),
                "seq": r.seq,
                "issued_at": r.issued_at,
                "expires_at": r.expires_at,
                "asked": asked,
                "agreeing": resolution.agreeing,
                "set_aside": resolution.set_aside.iter().map(|(registry, why)| json!({ "registry": registry, "why": why })).collect::<Vec<_>>(),
                "pinned_now": !resolution.was_pinned,
            })
            .to_string()
        }
        (Found::Alias(_), false) => format!(
            "name     {name} (local alias)\nkey      {key}\nid       {}\naddress  {address}",
            address.id()
        ),
        (Found::Registry { resolution, asked }, false) => {
            let r = &resolution.record;
            let pin = if resolution.was_pinned {
                "matches the pinned key"
            } else {
                "pinned now (first use)"
            };
            format!(
                "name     {name}\nkey      {key} ({pin})\nid       {}\naddress  {address}\nseq      {}\nissued   {}\nexpires  {}\nserved   by {} of {asked} registries",
                address.id(),
                r.seq,
                utc(r.issued_at),
                utc(r.expires_at),
                resolution.agreeing.len(),
            )
        }
    };
    print(&text)
}

fn add(node: &Node, alias: &Name, address: &str, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let address = Address::parse(address)?;
    let mut aliases =
        Aliases::load_aliases(&node.settings.home).context("cannot read the aliases")?;
    aliases.set(alias, address.clone());
    aliases
        .save()
        .with_context(|| format!("cannot save {}", aliases.path().display()))?;
    let text = if reporter.json {
        json!({ "name": alias.to_string(), "id": address.id(), "addr": address.to_string() })
            .to_string()
    } else {
        format!(
            "{alias} is now a local alias for {} ({address})",
            address.id()
        )
    };
    print(&text)
}

fn list(node: &Node, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let home = &node.settings.home;
    let aliases = Aliases::load_aliases(home).context("cannot read the aliases")?;
    let pins = Pins::load_pins(home).context("cannot read the pinned name keys")?;
    let text = if reporter.json {
        let aliases: Vec<_> = aliases
            .entries()
            .map(|(n, a)| json!({ "name": n.to_string(), "id": a.id(), "addr": a.to_string() }))
            .collect();
        let pins: Vec<_> = pins
            .entries()
            .map(|(n, k)| json!({ "name": n.to_string(), "id": k.id(), "fingerprint": k.fingerprint(), "key": k.text() }))
            .collect();
        json!({ "aliases": aliases, "pins": pins }).to_string()
    } else {
        let mut lines = vec!["aliases (name, node id, address):".to_string()];
        lines.extend(
            aliases
                .entries()
                .map(|(n, a)| format!("  {n}  {}  {a}", a.id())),
        );
        if aliases.entries().next().is_none() {
            lines.push("  (none)".into());
        }
        lines.push("pinned keys (name, key fingerprint):".into());
        lines.extend(
            pins.entries()
                .map(|(n, k)| format!("  {n}  {}", k.fingerprint())),
        );
        if pins.entries().next().is_none() {
            lines.push("  (none)".into());
        }
        lines.join("\n")
    };
    print(&text)
}

fn forget(node: &Node, name: &Name, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let home = &node.settings.home;
    let mut pins = Pins::load_pins(home).context("cannot read the pinned name keys")?;
    let mut aliases = Aliases::load_aliases(home).context("cannot read the aliases")?;
    let pin = pins.get(name).copied();
    let had_alias = aliases.remove(name);
    if pins.remove(name) {
        pins.save()
            .with_context(|| format!("cannot save {}", pins.path().display()))?;
    }
    if had_alias {
        aliases
            .save()
            .with_context(|| format!("cannot save {}", aliases.path().display()))?;
    }
    let text = if reporter.json {
        json!({ "name": name.to_string(), "pin": pin.map(|k| k.fingerprint()), "alias": had_alias })
            .to_string()
    } else {
        let mut lines = Vec::new();
        if let Some(key) = pin {
            lines.push(format!(
                "{name}: forgot the pinned key {}",
                key.fingerprint()
            ));
        }
        if had_alias {
            lines.push(format!("{name}: forgot the local alias"));
        }
        if lines.is_empty() {
            lines.push(format!("{name}: nothing to forget (no pin, no alias)"));
        }
        lines.join("\n")
    };
    print(&text)
}
