//! `scripted-model --script FILE [--port N]`: serve a script until interrupted.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use orch_testkit::{Script, ScriptedModel};

/// A scripted OpenAI-compatible model server (see the orch-testkit README for the format).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The script: TOML, or JSON when the file name ends in `.json`.
    #[arg(long)]
    script: PathBuf,
    /// The port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let script = match Script::load(&args.script) {
        Ok(script) => script,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rules = script.rules.len();
    let model = match ScriptedModel::start_on(script, args.port) {
        Ok(model) => model,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "scripted-model listening on {} ({rules} rules)",
        model.base_url()
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    // The server runs on its own thread; wait here for Ctrl-C, then stop it.
    let _ = runtime.block_on(tokio::signal::ctrl_c());
    drop(model);
    ExitCode::SUCCESS
}
