//! What every backend accepts: the strictest backend's limits (Consul's), so an instance that
//! fits them can be written anywhere. The agent's label rules size user input with these.

use crate::instance::OWN_META_KEYS;

/// Meta keys Consul allows per service.
pub const MAX_META_KEYS: usize = 64;
/// Meta keys left for user meta once berth's own ([`OWN_META_KEYS`]) are added.
pub const MAX_USER_META_KEYS: usize = MAX_META_KEYS - OWN_META_KEYS.len();
/// Longest meta key Consul accepts, in bytes.
pub const MAX_META_KEY_LEN: usize = 128;
/// Longest meta value Consul accepts, in bytes.
pub const MAX_META_VALUE_LEN: usize = 512;
/// Longest health output a backend stores, in bytes (Consul keeps 4 KB of check output).
pub const MAX_HEALTH_OUTPUT: usize = 4096;
/// Meta key prefixes that are not the user's: berth's own, and Consul's reserved one.
pub const RESERVED_META_PREFIXES: [&str; 2] = [crate::instance::META_RESERVED_PREFIX, "consul-"];

/// `output` cut to [`MAX_HEALTH_OUTPUT`] bytes on a character boundary.
pub fn truncate_output(output: &str) -> &str {
    &output[..output.floor_char_boundary(MAX_HEALTH_OUTPUT)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_on_a_char_boundary() {
        assert_eq!(truncate_output("short"), "short");
        let long = "é".repeat(MAX_HEALTH_OUTPUT); // two bytes each
        assert_eq!(truncate_output(&long).len(), MAX_HEALTH_OUTPUT);
        let odd = format!("a{long}");
        let capped = truncate_output(&odd);
        assert_eq!(capped.len(), MAX_HEALTH_OUTPUT - 1);
        assert!(odd.starts_with(capped));
    }
}
