//! Bus configuration, the same flags and environment variables in every binary.

use std::path::PathBuf;
use std::time::Duration;

use crate::BusError;

/// Environment variables with the `KAFKA_` prefix that are vncguard's own flags, not
/// librdkafka properties.
const OWN_VARIABLES: &[&str] = &[
    "KAFKA_BROKERS",
    "KAFKA_CONFIG_FILE",
    "KAFKA_PARTITIONS",
    "KAFKA_REPLICATION_FACTOR",
];

#[derive(Debug, Clone, clap::Args)]
pub struct BusArgs {
    /// Kafka bootstrap servers (comma-separated host:port).
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// File of librdkafka properties, one `key=value` per line (`#` comments). Any other
    /// `KAFKA_*` environment variable is passed through too: `KAFKA_SECURITY_PROTOCOL=ssl`
    /// becomes `security.protocol=ssl`.
    #[arg(long, env = "KAFKA_CONFIG_FILE")]
    pub kafka_config_file: Option<PathBuf>,
    /// Partitions of topics this binary creates when they are missing.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3)]
    pub kafka_partitions: i32,
    /// Replication factor of topics this binary creates.
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    pub kafka_replication_factor: i32,
    /// Most records handed to the stage at once.
    #[arg(long, env = "BUS_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,
    /// How long to wait for a batch to fill, in milliseconds.
    #[arg(long, env = "BUS_LINGER_MS", default_value_t = 50)]
    pub linger_ms: u64,
}

impl BusArgs {
    /// Arguments for a broker at `brokers` with every other setting at its default.
    pub fn for_brokers(brokers: &str) -> Self {
        BusArgs {
            kafka_brokers: brokers.to_string(),
            kafka_config_file: None,
            kafka_partitions: 3,
            kafka_replication_factor: 1,
            batch_size: 500,
            linger_ms: 50,
        }
    }

    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    /// librdkafka properties from the config file, then from `KAFKA_*` variables (which win).
    pub fn passthrough_properties(&self) -> Result<Vec<(String, String)>, BusError> {
        let mut properties = Vec::new();
        if let Some(path) = &self.kafka_config_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| BusError::Config(format!("cannot read {}: {e}", path.display())))?;
            properties.extend(parse_properties(&text).map_err(BusError::Config)?);
        }
        properties.extend(properties_from_env(std::env::vars()));
        Ok(properties)
    }
}

/// Parses `key=value` lines; blank lines and `#` comments are skipped.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(i, line)| {
            line.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("line {}: expected key=value, got {line:?}", i + 1))
        })
        .collect()
}

/// `KAFKA_SECURITY_PROTOCOL=ssl` → `security.protocol=ssl`, skipping vncguard's own variables.
pub fn properties_from_env(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.filter(|(k, _)| k.starts_with("KAFKA_") && !OWN_VARIABLES.contains(&k.as_str()))
        .map(|(k, v)| (k["KAFKA_".len()..].to_lowercase().replace('_', "."), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_variables_map_to_librdkafka_properties() {
        let vars = vec![
            ("KAFKA_SECURITY_PROTOCOL".to_string(), "ssl".to_string()),
            ("KAFKA_BROKERS".to_string(), "x:1".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        assert_eq!(
            properties_from_env(vars.into_iter()),
            vec![("security.protocol".to_string(), "ssl".to_string())]
        );
    }

    #[test]
    fn property_file_lines_parse_and_errors_name_the_line() {
        let parsed = parse_properties("# c\n\nsocket.timeout.ms = 100\n").unwrap();
        assert_eq!(parsed, vec![("socket.timeout.ms".into(), "100".into())]);
        let err = parse_properties("a=1\nbogus\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }
}
