//! What the user sees on stderr besides logs: how to connect, the `connected` line, the outcome.
//! Human lines by default; with `--json`, one JSON object per line (`{"event": …}`), so scripts
//! and tests never scrape prose. Stdout is never touched here: it carries data only.

use std::io::Write;

use serde::Serialize;

/// How events are shown.
#[derive(Clone, Copy, Debug)]
pub struct Reporter {
    pub json: bool,
    pub quiet: bool,
}

/// The link that came up (DESIGN.md §1).
#[derive(Clone, Debug, Serialize)]
pub struct Connected {
    pub peer: String,
    pub method: String,
    pub transport: &'static str,
    pub path: &'static str,
    pub local: String,
    pub remote: String,
    pub setup_ms: u64,
    /// Signalling traffic this side saw (connector, when signalling was used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalUse>,
}

/// A resume offer's outcome on one side (`{"event":"resume",…}`).
#[derive(Clone, Debug, Serialize)]
pub struct Resume {
    /// `receiver` (its `.part`) or `sender` (its `--send` file).
    pub side: &'static str,
    /// The receiver's `.part` or the sender's file.
    pub file: String,
    /// `resumed` or `restarted`.
    pub outcome: &'static str,
    /// Where the data now starts: the bytes not moved again (0 when restarted).
    pub offset: u64,
    /// What the receiver's `.part` held (or offered).
    pub had: u64,
    /// Why it restarted: `mismatch`, `shorter` (the sender's file is shorter than the
    /// `.part`), `stream` (the peer sends stdin, which cannot be resumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Receiver: its `.part` was read and hashed again (its hash record did not describe it).
    pub rehashed: bool,
}

/// What a name resolved to (`connect NAME`).
#[derive(Clone, Debug, Serialize)]
pub struct Resolved {
    pub name: String,
    pub id: String,
    /// `alias` or `registry`.
    pub source: &'static str,
    /// Registries asked and registries that served the chosen record (0 for an alias).
    pub asked: usize,
    pub agreeing: usize,
    pub pinned_now: bool,
    /// How long resolving took (reading the aliases, asking the registries, verifying).
    pub resolve_ms: u64,
}

/// Messages and bytes through the brokers, both directions, every broker counted.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SignalUse {
    pub messages: u64,
    pub bytes: u64,
}

impl From<&crate::signal::SignalStats> for SignalUse {
    fn from(stats: &crate::signal::SignalStats) -> Self {
        let sum = |f: fn(&crate::signal::BrokerStats) -> u64| stats.brokers.iter().map(f).sum();
        Self {
            messages: sum(|b| b.published + b.received),
            bytes: sum(|b| b.published_bytes + b.received_bytes),
        }
    }
}

impl Connected {
    /// The event for `link`, won by `method`, `setup` after the start that matters to this side.
    pub fn new(link: &crate::link::LinkInfo, method: &str, setup: std::time::Duration) -> Self {
        Self {
            peer: link.peer.id().to_string(),
            method: method.to_string(),
            transport: link.transport.as_str(),
            path: link.path.as_str(),
            local: link.local.to_string(),
            remote: link.remote.to_string(),
            setup_ms: setup.as_millis() as u64,
            signal: None,
        }
    }
}

impl Reporter {
    fn emit(&self, event: &str, fields: impl Serialize, human: impl FnOnce() -> String) {
        let line = if self.json {
            let mut value = serde_json::to_value(fields).unwrap_or(serde_json::Value::Null);
            if let serde_json::Value::Object(map) = &mut value {
                map.insert("event".into(), event.into());
            }
            value.to_string()
        } else if self.quiet {
            return;
        } else {
            human()
        };
        // stderr may be closed too; nothing useful to do about it then.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// Listening as `id` on `port`, reachable at `addr` and, with `listen --name`, by `name`.
    pub fn listening(&self, id: &str, addr: &str, port: u16, name: Option<&str>) {
        #[derive(Serialize)]
        struct Listening<'a> {
            id: &'a str,
            addr: &'a str,
            port: u16,
            name: Option<&'a str>,
        }
        self.emit("listening", Listening { id, addr, port, name }, || {
            let mut line = format!("warpgate: listening as {id} on port {port}; connect with:\n  warpgate connect {addr}");
            if let Some(name) = name {
                line.push_str(&format!("\n  warpgate connect {name}"));
            }
            line
        });
    }

    /// A name resolved to node `id`, through a local alias or the registries (`agreeing` of
    /// `asked` served its record; `pinned_now`: first use, the key was just pinned).
    pub fn resolved(&self, r: &Resolved) {
        self.emit("resolved", r, || {
            let how = match r.source {
                "alias" => "a local alias".to_string(),
                _ => format!("{} of {} registries", r.agreeing, r.asked),
            };
            let pinned = if r.pinned_now {
                "; key pinned on first use"
            } else {
                ""
            };
            format!(
                "warpgate: {} is {} (from {how} in {} ms{pinned})",
                r.name, r.id, r.resolve_ms
            )
        });
    }

    pub fn connected(&self, c: &Connected) {
        self.emit("connected", c, || {
            format!(
                "warpgate: connected to {} via {} ({}, {}) {} -> {} in {} ms",
                c.peer, c.method, c.transport, c.path, c.local, c.remote, c.setup_ms
            )
        });
    }

    /// A relayed link moved to another path (`{"event":"path",…}`).
    pub fn path_changed(&self, change: &crate::link::PathChange) {
        #[derive(Serialize)]
        struct PathEvent<'a> {
            path: &'static str,
            method: &'a str,
            remote: String,
            after_ms: u64,
        }
        let after = change.after;
        let event = PathEvent {
            path: change.path.as_str(),
            method: change.method,
            remote: change.remote.to_string(),
            after_ms: after.as_millis() as u64,
        };
        self.emit("path", event, || {
            format!(
                "warpgate: now {} via {} after {:.1} s ({})",
                change.path.as_str(),
                change.method,
                after.as_secs_f64(),
                change.remote
            )
        });
    }

    /// Reports `link`'s moves to another path (a relayed link's) for as long as the returned
    /// handle is kept; `None` for a link that cannot move.
    pub fn follow_path(
        &self,
        link: &crate::link::Link,
    ) -> Option<tokio_util::task::AbortOnDropHandle<()>> {
        let mut changes = link.path_changes()?;
        let reporter = *self;
        let task = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let change = changes.borrow_and_update().clone();
                if let Some(change) = change {
                    reporter.path_changed(&change);
                }
            }
        });
        Some(tokio_util::task::AbortOnDropHandle::new(task))
    }

    pub fn forwarding(&self, local: &str, direction: &str) {
        #[derive(Serialize)]
        struct Forwarding<'a> {
            local: &'a str,
            direction: &'a str,
        }
        self.emit("forwarding", Forwarding { local, direction }, || {
            format!("warpgate: forwarding {direction} {local}")
        });
    }

    /// A transfer (one peer's stdio or file exchange) finished: `totals` moved now, after
    /// `resumed` that a resumed file did not move again.
    pub fn done(&self, peer: &str, totals: crate::splice::Totals, resumed: crate::splice::Totals) {
        #[derive(Serialize)]
        struct Done<'a> {
            peer: &'a str,
            sent: u64,
            received: u64,
            resumed: crate::splice::Totals,
        }
        let event = Done {
            peer,
            sent: totals.sent,
            received: totals.received,
            resumed,
        };
        let kept = resumed.sent + resumed.received;
        // Quiet in human mode unless resumed: the data itself is the result; `-v` logs carry
        // the counts.
        if self.json || (kept > 0 && !self.quiet) {
            self.emit("done", event, || {
                format!(
                    "warpgate: transfer complete: resumed after {kept} bytes; {} sent and {} received now",
                    totals.sent, totals.received
                )
            });
        } else {
            tracing::info!(
                peer,
                sent = totals.sent,
                received = totals.received,
                "transfer complete"
            );
        }
    }

    /// A UDP forwarding session with `peer` ended: what it carried and what it dropped.
    pub fn udp_done(&self, peer: &str, totals: &crate::udp_forward::Totals) {
        #[derive(Serialize)]
        struct Done<'a> {
            peer: &'a str,
            #[serde(flatten)]
            totals: &'a crate::udp_forward::Totals,
        }
        let t = totals;
        self.emit("done", Done { peer, totals }, || {
            format!(
                "warpgate: UDP forwarding with {peer} ended: {} datagrams sent, {} received, {} \
                 flows; {} oversized (too large for the link, not sent), {} dropped, {} refused \
                 (flow cap)",
                t.datagrams_sent, t.datagrams_received, t.flows, t.oversized, t.dropped, t.refused
            )
        });
    }

    /// A `--recv` file resumed or started over, or a `--send` file's answer to a resume offer.
    pub fn resume(&self, r: &Resume) {
        self.emit("resume", r, || {
            let (file, had) = (&r.file, r.had);
            match (r.side, r.reason) {
                ("receiver", None) => format!(
                    "warpgate: resuming {file} after {} bytes (they match the sender's file)",
                    r.offset
                ),
                ("sender", None) => format!(
                    "warpgate: resuming {file} after {} bytes (the peer has them)",
                    r.offset
                ),
                ("receiver", Some("mismatch")) => format!(
                    "warpgate: {file} does not match the sender's file ({had} bytes compared): starting over"
                ),
                ("receiver", Some("shorter")) => format!(
                    "warpgate: {file} holds {had} bytes, more than the sender's file: starting over"
                ),
                ("receiver", Some("stream")) => format!(
                    "warpgate: cannot resume {file}: the peer sends a stream (stdin), not a file: starting over"
                ),
                ("sender", Some("mismatch")) => format!(
                    "warpgate: the peer's {had} bytes do not match {file}: starting over"
                ),
                ("sender", Some("shorter")) => format!(
                    "warpgate: the peer has {had} bytes, more than {file} holds: starting over"
                ),
                (_, Some(why)) => format!("warpgate: cannot resume {file} ({why}): starting over"),
                (_, None) => format!("warpgate: resuming {file} after {} bytes", r.offset),
            }
        });
    }

    /// A name registry is serving on `bind` (the real port when 0 was asked for).
    pub fn registry(&self, bind: &str, db: &str, tls: bool) {
        #[derive(Serialize)]
        struct Registry<'a> {
            bind: &'a str,
            db: &'a str,
            tls: bool,
        }
        self.emit("registry", Registry { bind, db, tls }, || {
            let scheme = if tls { "https" } else { "http" };
            format!("warpgate: registry serving {scheme}://{bind} (names in {db})")
        });
    }

    /// The final error: a one-line message.
    pub fn error(&self, message: &str) {
        let line = if self.json {
            serde_json::json!({ "event": "error", "message": message }).to_string()
        } else {
            format!("warpgate: error: {message}")
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}
