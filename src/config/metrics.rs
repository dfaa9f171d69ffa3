//! `[metrics]`: the HTTP endpoint with Prometheus metrics and health checks.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// The HTTP endpoint with Prometheus metrics and health checks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of `/metrics` (Prometheus text), `/healthz` and `/readyz`; empty: no endpoint.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9464".into() }
    }
}

impl MetricsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid("metrics.listen", "must be `ip:port` (or empty for no endpoint)");
        }
        Ok(())
    }
}
