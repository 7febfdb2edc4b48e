//! The settings every client of a broker is made with.

use std::time::Duration;

use rdkafka::ClientConfig;

/// Settings shared by every client the broker makes.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) bootstrap: String,
    pub(crate) client_id: Option<String>,
    /// librdkafka settings given with `.config(..)`, applied last.
    pub(crate) extra: Vec<(String, String)>,
    pub(crate) commit_interval: Duration,
    pub(crate) commit_batch: usize,
    pub(crate) commit_timeout: Duration,
}

impl Settings {
    /// A librdkafka configuration with the bootstrap servers, client id and passthrough settings.
    pub(crate) fn client_config(&self, overrides: &[(String, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        if let Some(id) = &self.client_id {
            config.set("client.id", id);
        }
        for (k, v) in self.extra.iter().chain(overrides) {
            config.set(k, v);
        }
        config
    }
}
