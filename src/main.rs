//! The `warpgate` binary: builds the runtime and hands over to [`warpgate::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    warpgate::cli::main()
}
