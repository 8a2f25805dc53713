//! Configuration files: TOML, strict. An unknown key or a bad value is an error that names the
//! file, the key and the line; there are no silent defaults for misspelt settings. Each
//! subcommand's config struct uses `#[serde(deny_unknown_fields)]`.

use std::path::Path;

use anyhow::Context as _;
use serde::de::DeserializeOwned;

/// Reads and parses a TOML configuration file into `T`.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    parse_toml(&text).with_context(|| format!("config file {}", path.display()))
}

/// Parses TOML text into `T`; the error names the offending key and its position.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        listen: String,
        threads: Option<u16>,
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse_toml::<Sample>("listen = \"x\"\nlisten_port = 3\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown field `listen_port`"), "{msg}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = parse_toml::<Sample>("listen = \"x\"\nthreads = -1\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("threads"), "{msg}");
    }
}
