//! `scripted-model --script FILE [--port N] [--generation auto|v1|v2]`: serve a script until
//! interrupted.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use orch_testkit::{Generation, Script, ScriptedModel};

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
    /// The OpenCode generation whose tool names and argument keys the tool calls take:
    /// `v1`, `v2`, or `auto` (each request's own, told by the tools it offers).
    #[arg(long, value_enum, default_value_t = GenerationArg::Auto)]
    generation: GenerationArg,
}

/// `--generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GenerationArg {
    /// Each request's own.
    Auto,
    /// OpenCode 1.
    V1,
    /// OpenCode 2.
    V2,
}

impl GenerationArg {
    fn generation(self) -> Option<Generation> {
        match self {
            GenerationArg::Auto => None,
            GenerationArg::V1 => Some(Generation::V1),
            GenerationArg::V2 => Some(Generation::V2),
        }
    }
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
    let model = match ScriptedModel::builder(script)
        .port(args.port)
        .generation_opt(args.generation.generation())
        .start()
    {
        Ok(model) => model,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "scripted-model listening on {} ({rules} rules, tool calls for {})",
        model.base_url(),
        args.generation
            .generation()
            .map_or("the generation of each request", Generation::as_str)
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
