//! One module per command. Each computes a serialisable summary, then prints it
//! as JSON (`--json`) or for a person.

mod cleanup;
mod dataset;
mod demo;
mod experiment;
mod export;
mod extract;
mod forget;
mod import;
mod live;
mod models;
mod report;
mod store;

use anyhow::Result;
use serde::Serialize;

use crate::cli::{Cli, Command};
use crate::config::Settings;

/// What every command gets.
pub struct Context {
    pub settings: Settings,
    pub json: bool,
}

impl Context {
    /// Prints a command's result: its JSON summary, or the text for a person.
    pub fn print(&self, summary: &impl Serialize, human: impl FnOnce() -> String) -> Result<()> {
        let text = if self.json {
            serde_json::to_string(summary)? + "\n"
        } else {
            human()
        };
        emit(&text)
    }
}

/// Writes to stdout; a reader that went away (`manirec … | head`) is not an
/// error worth a panic.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => Ok(written?),
    }
}

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> Result<()> {
    let ctx = Context {
        settings: Settings::load(&cli.data_dir)?,
        json: cli.json,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Demo(args) => runtime.block_on(demo::run(&ctx, args)),
        Command::Import(args) => import::run(&ctx, args),
        Command::Extract(args) => runtime.block_on(extract::run(&ctx, args)),
        Command::Serve(args) => runtime.block_on(live::serve(&ctx, args)),
        Command::Sync => runtime.block_on(live::sync(&ctx)),
        Command::Retrain(args) => runtime.block_on(live::retrain(&ctx, args)),
        Command::Poll => runtime.block_on(live::poll(&ctx)),
        Command::Recommend(args) => runtime.block_on(live::recommend(&ctx, args)),
        Command::Dataset(command) => runtime.block_on(dataset::run(&ctx, command)),
        Command::Train(args) => runtime.block_on(models::train(&ctx, *args)),
        Command::Evaluate(args) => runtime.block_on(models::evaluate(&ctx, args)),
        Command::Models(command) => models::registry(&ctx, command),
        Command::Export(args) => runtime.block_on(export::run(&ctx, args)),
        Command::Report => runtime.block_on(report::run(&ctx)),
        Command::Cleanup(args) => runtime.block_on(cleanup::run(&ctx, args)),
        Command::Forget(args) => forget::run(&ctx, args),
        Command::Experiment(command) => experiment::run(&ctx, command),
        Command::Rule(command) => experiment::rule(&ctx, command),
        Command::Runs(args) => experiment::runs(&ctx, args),
        Command::Store(command) => store::run(&ctx, command),
    }
}
