//! Secrets the robot makes for itself when none is given: the hook secret in the webhook
//! URLs and the presence token. Kept in the data folder so that the URLs pasted into the
//! CRM stay valid across restarts.

use std::io::Write;
use std::path::Path;

use secrecy::SecretString;

/// Where a secret came from, for the start-up message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From the environment.
    Environment,
    /// Read from the data folder, made on an earlier start.
    DataDir,
    /// Made now and written to the data folder.
    Generated,
}

/// The secret from the environment if given, else the one in `dir/name`, else a new random
/// one written there (readable by the owner only).
pub fn load_or_create(
    dir: &Path,
    name: &str,
    from_env: Option<SecretString>,
) -> std::io::Result<(SecretString, Origin)> {
    if let Some(secret) = from_env {
        return Ok((secret, Origin::Environment));
    }
    let path = dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim();
        if !text.is_empty() {
            return Ok((SecretString::from(text.to_owned()), Origin::DataDir));
        }
    }
    std::fs::create_dir_all(dir)?;
    let value: String = {
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        hex::encode(bytes)
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    file.write_all(value.as_bytes())?;
    Ok((SecretString::from(value), Origin::Generated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_generated_secret_is_kept_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) = load_or_create(dir.path(), "hook_secret", None).unwrap();
        assert_eq!(origin, Origin::Generated);
        assert_eq!(first.expose_secret().len(), 48);
        let (second, origin) = load_or_create(dir.path(), "hook_secret", None).unwrap();
        assert_eq!(origin, Origin::DataDir);
        assert_eq!(first.expose_secret(), second.expose_secret());
    }

    #[test]
    fn the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (s, origin) =
            load_or_create(dir.path(), "hook_secret", Some(SecretString::from("abc"))).unwrap();
        assert_eq!((s.expose_secret(), origin), ("abc", Origin::Environment));
        assert!(!dir.path().join("hook_secret").exists());
    }
}
