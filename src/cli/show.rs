//! `warpgate addr`: prints this node's address, or with `--json` the decoded record.

use std::io::Write;
use std::process::ExitCode;

use super::args::AddrArgs;
use super::Node;
use crate::addr::ADDR_VERSION;
use crate::report::Reporter;

pub async fn addr(node: &Node, args: AddrArgs, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let port = args.port.unwrap_or_else(|| node.default_port());
    let look = node.look(port).await;
    let address = node.address(port, &look, &[])?;
    let text = address.to_string();
    let line = if reporter.json {
        let doc = serde_json::json!({
            "text": text,
            "version": ADDR_VERSION,
            "id": address.id(),
            "key": data_encoding::HEXLOWER.encode(&address.key.to_compressed()),
            "candidates": address.candidates,
            "brokers": address.brokers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "nat": address.nat,
            "unknown_fields": address.unknown_fields.iter().map(|(t, _)| t).collect::<Vec<_>>(),
        });
        doc.to_string()
    } else {
        text
    };
    match writeln!(std::io::stdout().lock(), "{line}") {
        // `warpgate addr | true`: nobody wanted the output; that is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
