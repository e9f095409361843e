//! Where to connect and with what: flags, then the environment, then the profile in
//! `~/.config/portcullis/config.toml` (XDG_CONFIG_HOME honoured), as the AWS CLI does.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One `[profiles.NAME]` table of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `https://host:port`, or `http://…` for a local plaintext server.
    pub server: Option<String>,
    pub api_key: Option<String>,
    /// PEM CA certificates to trust for the server, besides the public roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// The config file's path.
pub fn config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("portcullis").join("config.toml"))
}

/// The named profile, empty when the file or the profile is missing.
pub fn load(name: &str) -> Result<Profile, String> {
    let Some(path) = config_path() else { return Ok(Profile::default()) };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Profile::default()),
        Err(err) => return Err(format!("{}: {err}", path.display())),
    };
    let file: File = toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(file.profiles.get(name).cloned().unwrap_or_default())
}
