//! Secrets in the configuration (RADIUS secrets, the ClickHouse password,
//! SNMP credentials). Each can be written inline, or read from a file
//! (`*_file`) or an environment variable (`*_env`) when the configuration
//! is loaded. A [`Secret`] prints as `***` everywhere: Debug, Display, and
//! the TOML `check-config` prints; only [`Secret::expose`] reveals it.

use std::{
    fmt,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize, Serializer};

use super::ConfigError;

/// What a secret prints as.
pub const REDACTED: &str = "***";

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: for the protocol that needs it, never for output.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// A secret given on the command line or in the environment, which
/// replaces whatever the file says.
#[derive(Clone, Debug)]
pub enum SecretOverride {
    /// A flag's value: visible to every local user (`ps`), warned of.
    Argv(Secret),
    /// An environment variable's value (`FLOWTALLY_*`).
    Env(Secret),
    /// A flag naming a file.
    File(PathBuf),
}

/// One secret's three sources in a config section: `inline`, `file` and
/// `env` are the values of the keys `key`, `key_file` and `key_env`.
pub struct Sources<'a> {
    pub key: &'static str,
    pub flag: &'static str,
    pub inline: &'a mut Option<Secret>,
    pub file: &'a Option<PathBuf>,
    pub env: &'a Option<String>,
    /// Which entry of a list, for the message ("client 198.18.0.0/16").
    pub entry: Option<String>,
}

impl Sources<'_> {
    /// Reads the file or the variable into `inline`; more than one source
    /// is an error naming the key. Appends a warning when the file is
    /// readable by group or others.
    pub fn resolve(self, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
        let key = self.key;
        let invalid = |message: String| ConfigError::Invalid {
            key,
            flag: self.flag,
            message: match &self.entry {
                Some(entry) => format!("{entry}: {message}"),
                None => message,
            },
        };
        let given = [
            self.inline.is_some(),
            self.file.is_some(),
            self.env.is_some(),
        ];
        if given.iter().filter(|given| **given).count() > 1 {
            return Err(invalid(format!(
                "give one of `{key}`, `{key}_file` and `{key}_env`"
            )));
        }
        let value = if let Some(path) = self.file {
            if let Some(warning) = readable_by_others(path, &format!("{key}_file")) {
                warnings.push(warning);
            }
            read_file(path).map_err(|message| invalid(format!("{}: {message}", path.display())))?
        } else if let Some(name) = self.env {
            std::env::var(name).map_err(|_| {
                invalid(format!(
                    "environment variable {name} is not set (or not UTF-8)"
                ))
            })?
        } else {
            return Ok(());
        };
        if value.is_empty() {
            return Err(invalid("is empty".to_owned()));
        }
        *self.inline = Some(Secret(value));
        Ok(())
    }
}

/// A secret file holds one line; its line ending is not part of the secret.
fn read_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|err| err.to_string())?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.contains('\n') {
        return Err("more than one line".to_owned());
    }
    Ok(value.to_owned())
}

/// A warning when `path`, which holds secrets (`what`), may be read by
/// its group or by others.
pub fn readable_by_others(path: &Path, what: &str) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then(|| {
        format!(
            "{} holds secrets ({what}) and is readable by its group or others (mode {mode:03o}): \
             make it readable by flowtally's user only (chmod 600, or systemd's LoadCredential=)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_as_stars_everywhere() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(***)");
        #[derive(Serialize)]
        struct Section {
            secret: Secret,
        }
        let toml = toml::to_string(&Section { secret }).unwrap();
        assert_eq!(toml, "secret = \"***\"\n");
    }

    #[test]
    fn a_file_gives_its_one_line_without_the_line_ending() {
        let dir = std::env::temp_dir().join(format!("ft-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        let resolve = |content: &str| {
            std::fs::write(&path, content).unwrap();
            let mut inline = None;
            let mut warnings = Vec::new();
            Sources {
                key: "radius.secret",
                flag: "-",
                inline: &mut inline,
                file: &Some(path.clone()),
                env: &None,
                entry: None,
            }
            .resolve(&mut warnings)
            .map(|()| (inline.unwrap().expose().to_owned(), warnings))
            .map_err(|err| err.to_string())
        };
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(resolve("s3 cr\n").unwrap(), ("s3 cr".to_owned(), vec![]));
        assert_eq!(resolve("s3cr\r\n").unwrap().0, "s3cr");
        let err = resolve("\n").unwrap_err();
        assert!(
            err.contains("`radius.secret`") && err.contains("is empty"),
            "{err}"
        );
        let err = resolve("a\nb\n").unwrap_err();
        assert!(err.contains("more than one line"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let (_, warnings) = resolve("s3cr").unwrap();
        assert!(warnings[0].contains("mode 640"), "{warnings:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_sources_of_one_secret_are_an_error_naming_the_key() {
        let mut inline = Some(Secret::new("a"));
        let err = Sources {
            key: "clickhouse.password",
            flag: "-",
            inline: &mut inline,
            file: &None,
            env: &Some("PASSWORD".into()),
            entry: None,
        }
        .resolve(&mut Vec::new())
        .unwrap_err()
        .to_string();
        assert!(err.contains("`clickhouse.password_env`"), "{err}");
    }
}
