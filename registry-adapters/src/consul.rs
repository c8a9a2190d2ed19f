//! Consul backend (placeholder until written).
use crate::{Health, Instance, Listing, RegistryError};

#[derive(Debug, Clone)]
pub struct ConsulRegistry;

impl ConsulRegistry {
    pub(crate) async fn list(&self, _node: &str) -> Result<Listing, RegistryError> {
        unimplemented!()
    }
    pub(crate) async fn register(&self, _i: &Instance) -> Result<(), RegistryError> {
        unimplemented!()
    }
    pub(crate) async fn deregister(&self, _id: &str) -> Result<(), RegistryError> {
        unimplemented!()
    }
    pub(crate) async fn heartbeat(&self, _id: &str, _h: &Health) -> Result<(), RegistryError> {
        unimplemented!()
    }
    pub(crate) fn describe(&self) -> String {
        String::new()
    }
}
