//! Where to connect and with what: flags, then the environment, then the profile in
//! `~/.config/portcullis/config.toml` (XDG_CONFIG_HOME honoured), as the AWS CLI does.

use crate::errors::Failure;
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
    /// What `pcl login` stored: the access token, when it expires (Unix seconds) and its login
    /// session.
    pub access_token: Option<String>,
    pub token_expires_at: Option<i64>,
    pub login_session_id: Option<String>,
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
pub fn load(name: &str) -> Result<Profile, Failure> {
    let Some(path) = config_path() else { return Ok(Profile::default()) };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Profile::default()),
        Err(err) => return Err(format!("{}: {err}", path.display()).into()),
    };
    let file: File = toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(file.profiles.get(name).cloned().unwrap_or_default())
}

/// Writes `values` into the named profile (`None` removes a key), keeping the rest of the file;
/// the file is readable by its owner only, as it holds credentials.
pub fn store(name: &str, values: &[(&str, Option<toml::Value>)]) -> Result<(), Failure> {
    let path = config_path().ok_or("no home directory to keep the profile in")?;
    let mut file: toml::Table = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(err) => return Err(format!("{}: {err}", path.display()).into()),
    };
    let profiles = file.entry("profiles").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let profiles = profiles.as_table_mut().ok_or("`profiles` in the config file is not a table")?;
    let profile = profiles.entry(name).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let profile = profile.as_table_mut().ok_or_else(|| format!("profile {name} is not a table"))?;
    for (key, value) in values {
        match value {
            Some(value) => profile.insert((*key).to_owned(), value.clone()),
            None => profile.remove(*key),
        };
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    }
    let text = toml::to_string(&file).map_err(|err| err.to_string())?;
    Ok(write_private(&path, &text).map_err(|err| format!("{}: {err}", path.display()))?)
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // An older file may have been created with wider permissions.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}
