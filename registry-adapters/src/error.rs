//! Registry errors, classified by kind rather than by message.

/// An error from a registry backend.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry no longer knows this entry (for Consul: the agent restarted, or the check
    /// was removed). The caller re-registers.
    #[error("registry has no entry {id}")]
    NotFound { id: String },
    /// The registry could not be reached or answered with a server error; retrying may help.
    #[error("registry unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The registry refused the request (bad request, ACL denied); retrying will not help.
    #[error("registry rejected {what}: {message}")]
    Rejected { what: String, message: String },
    /// Invalid backend configuration (address, certificates, token).
    #[error("invalid registry configuration: {0}")]
    Config(String),
}

impl RegistryError {
    /// True for errors a retry with backoff may cure.
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }
}
