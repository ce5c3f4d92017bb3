//! Environment variables: the overrides of `robot.toml` keys and the secrets that never live
//! in a file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use secrecy::SecretString;

use super::problem::{Problem, did_you_mean};
use super::robot::RobotConfig;

/// Prefix of every variable the robot reads.
pub const PREFIX: &str = "ROBOT_";
/// The secret part of the webhook URLs.
pub const HOOK_SECRET_VAR: &str = "ROBOT_HOOK_SECRET";
/// The token managers' presence heartbeats carry.
pub const PRESENCE_TOKEN_VAR: &str = "ROBOT_PRESENCE_TOKEN";
/// The `application_token` Bitrix24 sends with its events.
pub const BITRIX24_APP_TOKEN_VAR: &str = "ROBOT_BITRIX24_APP_TOKEN";
/// amoCRM's long-lived token, used when `[amocrm]` has no `client_id`.
pub const AMOCRM_TOKEN_VAR: &str = "ROBOT_AMOCRM_TOKEN";
/// The secret key of the amoCRM OAuth integration named by `client_id`.
pub const AMOCRM_CLIENT_SECRET_VAR: &str = "ROBOT_AMOCRM_CLIENT_SECRET";
/// Bitrix24's inbound webhook URL, `https://portal/rest/1/abc…/`: the token is part of it.
pub const BITRIX24_WEBHOOK_VAR: &str = "ROBOT_BITRIX24_WEBHOOK";
/// The secret of the Bitrix24 local application named by `client_id`.
pub const BITRIX24_CLIENT_SECRET_VAR: &str = "ROBOT_BITRIX24_CLIENT_SECRET";
/// The Wazzup account's API key, for sending WhatsApp messages.
pub const WAZZUP_KEY_VAR: &str = "ROBOT_WAZZUP_KEY";
/// The mail server, `smtps://user:password@smtp.example.ru` or
/// `smtp://user:password@host:587?tls=required`: the password is part of it.
pub const SMTP_URL_VAR: &str = "ROBOT_SMTP_URL";
/// The directory that holds the rule files.
pub const CONFIG_DIR_VAR: &str = "ROBOT_CONFIG_DIR";

/// Short names for the settings people change most; each stands for the full
/// `ROBOT_<SECTION>_<KEY>` name given with it.
pub const ALIASES: &[(&str, &str)] = &[
    ("ROBOT_LISTEN", "ROBOT_SERVER_LISTEN"),
    ("ROBOT_DATA_DIR", "ROBOT_SERVER_DATA_DIR"),
];

/// Variables that are read elsewhere and so are never "unknown".
const RESERVED: &[&str] = &[
    HOOK_SECRET_VAR,
    PRESENCE_TOKEN_VAR,
    BITRIX24_APP_TOKEN_VAR,
    AMOCRM_TOKEN_VAR,
    AMOCRM_CLIENT_SECRET_VAR,
    BITRIX24_WEBHOOK_VAR,
    BITRIX24_CLIENT_SECRET_VAR,
    WAZZUP_KEY_VAR,
    SMTP_URL_VAR,
    CONFIG_DIR_VAR,
];

/// A snapshot of environment variables, so that loading is testable without touching the
/// process's own environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The process's environment; variables whose name or value is not UTF-8 are skipped.
    pub fn from_process() -> Self {
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    /// Given variables, e.g. `Env::from_pairs([("ROBOT_LISTEN", "0.0.0.0:80")])`.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// All variables, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

// Names only: the environment holds the secrets.
impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Env").field(&self.0.keys()).finish()
    }
}

/// The secrets, read from the environment only. `Debug` shows `[REDACTED]` for each.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `ROBOT_HOOK_SECRET`: the secret part of the webhook URLs.
    pub hook_secret: Option<SecretString>,
    /// `ROBOT_PRESENCE_TOKEN`: the token presence heartbeats carry.
    pub presence_token: Option<SecretString>,
    /// `ROBOT_BITRIX24_APP_TOKEN`: the `application_token` Bitrix24 sends with events.
    pub bitrix24_app_token: Option<SecretString>,
    /// `ROBOT_AMOCRM_TOKEN`: amoCRM's long-lived token.
    pub amocrm_token: Option<SecretString>,
    /// `ROBOT_AMOCRM_CLIENT_SECRET`: the amoCRM OAuth integration's secret key.
    pub amocrm_client_secret: Option<SecretString>,
    /// `ROBOT_BITRIX24_WEBHOOK`: the inbound webhook URL Bitrix24's REST API is called at;
    /// a secret because the token is part of the URL.
    pub bitrix24_webhook: Option<SecretString>,
    /// `ROBOT_BITRIX24_CLIENT_SECRET`: the Bitrix24 local application's `client_secret`.
    pub bitrix24_client_secret: Option<SecretString>,
    /// `ROBOT_WAZZUP_KEY`: the Wazzup account's API key.
    pub wazzup_key: Option<SecretString>,
    /// `ROBOT_SMTP_URL`: the mail server's URL, login and password included.
    pub smtp_url: Option<SecretString>,
}

impl Secrets {
    /// Reads the secrets; an empty variable counts as unset, so that an empty secret can
    /// never be accepted.
    pub fn from_env(env: &Env) -> Self {
        let read = |name: &str| {
            env.get(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(SecretString::from)
        };
        Self {
            hook_secret: read(HOOK_SECRET_VAR),
            presence_token: read(PRESENCE_TOKEN_VAR),
            bitrix24_app_token: read(BITRIX24_APP_TOKEN_VAR),
            amocrm_token: read(AMOCRM_TOKEN_VAR),
            amocrm_client_secret: read(AMOCRM_CLIENT_SECRET_VAR),
            bitrix24_webhook: read(BITRIX24_WEBHOOK_VAR),
            bitrix24_client_secret: read(BITRIX24_CLIENT_SECRET_VAR),
            wazzup_key: read(WAZZUP_KEY_VAR),
            smtp_url: read(SMTP_URL_VAR),
        }
    }
}

/// The TOML type a key takes, which decides how its environment value is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Integer,
    Float,
    Boolean,
    /// Comma-separated in the environment.
    Array(Box<Kind>),
    /// A table of its own (`[fields.leads]`): no variable sets it, since a map has no
    /// sensible single value.
    Table,
}

impl Kind {
    fn of(value: &toml::Value) -> Self {
        match value {
            toml::Value::Integer(_) => Kind::Integer,
            toml::Value::Float(_) => Kind::Float,
            toml::Value::Boolean(_) => Kind::Boolean,
            toml::Value::Array(items) => {
                Kind::Array(Box::new(items.first().map_or(Kind::String, Kind::of)))
            }
            toml::Value::Table(_) => Kind::Table,
            // Strings, and anything else a rule file would write as a string.
            _ => Kind::String,
        }
    }

    fn expected(&self) -> String {
        match self {
            Kind::String => "text".into(),
            Kind::Integer => "a whole number".into(),
            Kind::Float => "a number".into(),
            Kind::Boolean => "true or false".into(),
            Kind::Array(item) => format!("a comma-separated list of {}", item.expected()),
            Kind::Table => "a table, which only robot.toml can hold".into(),
        }
    }

    fn convert(&self, raw: &str) -> Option<toml::Value> {
        let text = raw.trim();
        Some(match self {
            Kind::String => toml::Value::String(raw.to_owned()),
            Kind::Integer => toml::Value::Integer(text.parse().ok()?),
            Kind::Float => toml::Value::Float(text.parse().ok()?),
            Kind::Boolean => toml::Value::Boolean(match text.to_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => true,
                "false" | "no" | "off" | "0" => false,
                _ => return None,
            }),
            // Empty pieces are dropped, so "" is an empty list and a trailing comma is fine.
            Kind::Array(item) => toml::Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|piece| !piece.is_empty())
                    .map(|piece| item.convert(piece))
                    .collect::<Option<_>>()?,
            ),
            Kind::Table => return None,
        })
    }
}

/// One key of `robot.toml` and the variable that overrides it.
#[derive(Debug, Clone)]
pub(crate) struct KeySpec {
    pub section: String,
    pub key: String,
    pub kind: Kind,
    /// `ROBOT_<SECTION>_<KEY>`; read only when [`KeySpec::has_var`].
    pub var: String,
}

impl KeySpec {
    /// Whether a variable can set the key: tables are written in the file only.
    pub fn has_var(&self) -> bool {
        self.kind != Kind::Table
    }
}

/// Every key, derived from the serialized types, so a new field gets its variable without
/// anyone remembering to add it.
pub(crate) fn schema() -> Vec<KeySpec> {
    let sample = toml::Table::try_from(RobotConfig::full_sample())
        .expect("the config types serialize to a TOML table");
    let mut keys = Vec::new();
    for (section, value) in &sample {
        let toml::Value::Table(table) = value else {
            unreachable!("every top-level field of RobotConfig is a section")
        };
        for (key, value) in table {
            keys.push(KeySpec {
                section: section.clone(),
                key: key.clone(),
                kind: Kind::of(value),
                var: format!("{PREFIX}{section}_{key}").to_uppercase(),
            });
        }
    }
    keys
}

/// A key's value taken from the environment, as a TOML literal ready to parse.
#[derive(Debug, Clone)]
pub(crate) struct Override {
    pub var: String,
    pub section: String,
    pub key: String,
    pub literal: String,
}

/// The overrides `env` sets, and the problems with the ones that cannot be used.
pub(crate) fn overrides(
    file: &Path,
    env: &Env,
    schema: &[KeySpec],
) -> (Vec<Override>, Vec<Problem>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for spec in schema.iter().filter(|s| s.has_var()) {
        let full = env.get(&spec.var).map(|v| (spec.var.as_str(), v));
        let alias = ALIASES
            .iter()
            .find(|(_, target)| *target == spec.var)
            .and_then(|(alias, _)| env.get(alias).map(|v| (*alias, v)));
        let (var, raw) = match (full, alias) {
            (Some((var, a)), Some((short, b))) if a != b => {
                problems.push(
                    Problem::error(
                        file,
                        format!("{var} and {short} are both set, to different values"),
                    )
                    .with_hint(format!("keep one of them; {var} is used")),
                );
                (var, a)
            }
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => continue,
        };
        match spec.kind.convert(raw) {
            Some(value) => found.push(Override {
                var: var.to_owned(),
                section: spec.section.clone(),
                key: spec.key.clone(),
                literal: value.to_string(),
            }),
            None => problems.push(Problem::error(
                file,
                format!(
                    "{var}=`{raw}` (sets `{}` in [{}]): expected {}",
                    spec.key,
                    spec.section,
                    spec.kind.expected()
                ),
            )),
        }
    }
    (found, problems)
}

/// Warnings for `ROBOT_*` variables that look like settings but are none, with the likely
/// intended name.
pub(crate) fn unknown_vars(file: &Path, env: &Env, schema: &[KeySpec]) -> Vec<Problem> {
    let known: Vec<&str> = schema
        .iter()
        .filter(|s| s.has_var())
        .map(|s| s.var.as_str())
        .chain(ALIASES.iter().map(|(alias, _)| *alias))
        .chain(RESERVED.iter().copied())
        .collect();
    let mut problems = Vec::new();
    for (var, _) in env.iter() {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        if known.contains(&var) {
            continue;
        }
        // Compare without the prefix, which every name shares and would make any two close.
        let near = did_you_mean(
            rest,
            known.iter().map(|k| k.strip_prefix(PREFIX).unwrap_or(k)),
        );
        let section = schema
            .iter()
            .find(|s| rest.starts_with(&format!("{}_", s.section.to_uppercase())))
            .map(|s| s.section.as_str());
        let settable = |section: &str| {
            schema
                .iter()
                .filter(|s| s.section == section && s.has_var())
                .map(|s| s.var.as_str())
                .collect::<Vec<_>>()
        };
        let hint = match (near, section) {
            (Some(near), _) => format!("did you mean {PREFIX}{near}?"),
            (None, Some(section)) if settable(section).is_empty() => {
                format!("[{section}] is not set from the environment: write it in robot.toml")
            }
            (None, Some(section)) => {
                format!("[{section}] is set by {}", settable(section).join(", "))
            }
            // Not like any setting: some other program's variable, leave it alone.
            (None, None) => continue,
        };
        problems.push(
            Problem::warning(
                file,
                format!("environment variable {var} is not a setting of the robot and is ignored"),
            )
            .with_hint(hint),
        );
    }
    problems
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn schema_lists_every_key_with_its_variable() {
        let schema = schema();
        let find = |var: &str| schema.iter().find(|s| s.var == var).map(|s| &s.kind);
        assert_eq!(find("ROBOT_SERVER_LISTEN"), Some(&Kind::String));
        assert_eq!(find("ROBOT_SERVER_PUBLIC_URL"), Some(&Kind::String));
        assert_eq!(find("ROBOT_JOBS_CONCURRENCY"), Some(&Kind::Integer));
        assert_eq!(find("ROBOT_AMOCRM_ACCOUNT_ID"), Some(&Kind::Integer));
        assert_eq!(find("ROBOT_BITRIX24_DOMAIN"), Some(&Kind::String));
        assert_eq!(
            find("ROBOT_WAZZUP_CHANNEL_IDS"),
            Some(&Kind::Array(Box::new(Kind::String)))
        );
        assert_eq!(find("ROBOT_PRESENCE_FRESH_FOR"), Some(&Kind::String));
        assert_eq!(find("ROBOT_CRM_KIND"), Some(&Kind::String));
        assert_eq!(find("ROBOT_WAZZUP_SEND_CHANNEL_ID"), Some(&Kind::String));
        assert_eq!(find("ROBOT_WAZZUP_BASE_URL"), Some(&Kind::String));
        assert_eq!(find("ROBOT_SMTP_FROM"), Some(&Kind::String));
        assert_eq!(find("ROBOT_SMTP_TIMEOUT"), Some(&Kind::String));
        // The secrets are not keys of the file.
        assert_eq!(find("ROBOT_WAZZUP_KEY"), None);
        assert_eq!(find("ROBOT_SMTP_URL"), None);
        assert_eq!(find("ROBOT_AMOCRM_BASE_URL"), Some(&Kind::String));
        assert_eq!(find("ROBOT_AMOCRM_CLIENT_ID"), Some(&Kind::String));
        assert_eq!(find("ROBOT_AMOCRM_REDIRECT_URI"), Some(&Kind::String));
        assert_eq!(find("ROBOT_AMOCRM_RATE_PER_SECOND"), Some(&Kind::Float));
        assert_eq!(find("ROBOT_BITRIX24_RATE_PER_SECOND"), Some(&Kind::Float));
        assert_eq!(find("ROBOT_BITRIX24_BURST"), Some(&Kind::Integer));
        assert_eq!(find("ROBOT_BITRIX24_TODO_VIA"), Some(&Kind::String));
        // Maps are listed, so the file's [fields.leads] is known, but have no variable.
        for table in ["leads", "contacts", "companies"] {
            let spec = schema
                .iter()
                .find(|s| s.section == "fields" && s.key == table)
                .unwrap();
            assert!(!spec.has_var(), "{spec:?}");
        }
    }

    #[test]
    fn values_are_converted_to_the_key_type() {
        assert_eq!(
            Kind::Integer.convert(" 12 "),
            Some(toml::Value::Integer(12))
        );
        assert_eq!(Kind::Integer.convert("twelve"), None);
        assert_eq!(
            Kind::Boolean.convert("Yes"),
            Some(toml::Value::Boolean(true))
        );
        let list = Kind::Array(Box::new(Kind::String));
        assert_eq!(list.convert("a, b,").unwrap().to_string(), r#"["a", "b"]"#);
        assert_eq!(list.convert("").unwrap().to_string(), "[]");
    }

    #[test]
    fn secrets_are_read_and_hidden() {
        let env = Env::from_pairs([
            (HOOK_SECRET_VAR, "s3cr3t-hook"),
            (PRESENCE_TOKEN_VAR, ""),
            (BITRIX24_APP_TOKEN_VAR, "b24-token"),
            (WAZZUP_KEY_VAR, "wz-key-0f9e8d7c"),
            (SMTP_URL_VAR, "smtps://robot:p4ssw0rd@smtp.example.ru"),
        ]);
        let secrets = Secrets::from_env(&env);
        assert_eq!(
            secrets.hook_secret.as_ref().unwrap().expose_secret(),
            "s3cr3t-hook"
        );
        assert!(secrets.presence_token.is_none(), "empty means unset");
        let shown = format!("{secrets:?} {env:?}");
        assert!(!shown.contains("s3cr3t-hook"), "{shown}");
        assert!(!shown.contains("b24-token"), "{shown}");
        assert!(!shown.contains("wz-key-0f9e8d7c"), "{shown}");
        assert!(!shown.contains("p4ssw0rd"), "{shown}");
        assert_eq!(
            secrets.wazzup_key.as_ref().unwrap().expose_secret(),
            "wz-key-0f9e8d7c"
        );
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn unknown_variables_get_a_hint() {
        let env = Env::from_pairs([
            ("ROBOT_SERVR_LISTEN", "x"),
            ("ROBOT_LISTN", "x"),
            ("ROBOT_JOBS_WORKERS", "x"),
            ("ROBOT_LOG", "debug"),
            ("ROBOT_HOOK_SECRET", "x"),
            ("ROBOT_CONFIG_DIR", "x"),
            ("ROBOT_AMOCRM_TOKEN", "x"),
            ("ROBOT_BITRIX24_WEBHOOK", "x"),
            ("ROBOT_WAZZUP_KEY", "x"),
            ("ROBOT_SMTP_URL", "x"),
            ("HOME", "/root"),
        ]);
        let problems = unknown_vars(Path::new("robot.toml"), &env, &schema());
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 3, "{text:#?}");
        assert!(problems.iter().all(|p| !p.is_error() && p.line.is_none()));
        // Sorted by name, as the environment is.
        assert!(text[0].contains("ROBOT_JOBS_CONCURRENCY"), "{}", text[0]);
        assert!(
            text[1].contains("did you mean ROBOT_LISTEN?"),
            "{}",
            text[1]
        );
        assert!(
            text[2].contains("did you mean ROBOT_SERVER_LISTEN?"),
            "{}",
            text[2]
        );
    }
}
