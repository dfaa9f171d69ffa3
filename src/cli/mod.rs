//! The subcommands: one module per command, each its arguments and a thin handler that calls
//! the library (`novelstream::pipeline` for `run`, `novelstream::tools` for the clients).

pub mod bench;
pub mod dataset;
pub mod eval;
pub mod export;
pub mod produce;
pub mod report;
pub mod run;
pub mod score;
pub mod summary;

use std::path::Path;

use clap::Args;
use novelstream::config::Config;

/// The config file at `path`, or the built-in defaults without one.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    })
}

/// Whether to draw progress bars: only when a person watches stderr, not into a log file.
pub fn progress() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Overrides of the config file's [kafka] section; each also reads an environment variable.
#[derive(Args, Default)]
pub struct KafkaOverrides {
    /// Bootstrap servers, `host:port[,host:port]` (overrides kafka.brokers).
    #[arg(long, env = "NOVELSTREAM_BROKERS")]
    brokers: Option<String>,
    /// Topic segments are read from (overrides kafka.input_topic).
    #[arg(long, env = "NOVELSTREAM_INPUT_TOPIC")]
    input_topic: Option<String>,
    /// Topic assignments are written to (overrides kafka.output_topic).
    #[arg(long, env = "NOVELSTREAM_OUTPUT_TOPIC")]
    output_topic: Option<String>,
    /// Topic unusable inputs are reported to (overrides kafka.dead_letter_topic).
    #[arg(long, env = "NOVELSTREAM_DEAD_LETTER_TOPIC")]
    dead_letter_topic: Option<String>,
    /// Consumer group (overrides kafka.group_id).
    #[arg(long, env = "NOVELSTREAM_GROUP_ID")]
    group_id: Option<String>,
}

impl KafkaOverrides {
    /// The config file at `path` (or the defaults) with these overrides, validated.
    pub fn load(self, path: Option<&Path>) -> anyhow::Result<Config> {
        let mut config = load_config(path)?;
        let kafka = &mut config.kafka;
        let fields = [
            (self.brokers, &mut kafka.brokers),
            (self.input_topic, &mut kafka.input_topic),
            (self.output_topic, &mut kafka.output_topic),
            (self.dead_letter_topic, &mut kafka.dead_letter_topic),
            (self.group_id, &mut kafka.group_id),
        ];
        for (value, field) in fields {
            if let Some(value) = value {
                *field = value;
            }
        }
        config.validate()?;
        Ok(config)
    }
}
