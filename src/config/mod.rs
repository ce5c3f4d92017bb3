//! The service configuration, `config/robot.toml`, turned into typed settings.
//!
//! [`load`] reads `robot.toml` from a directory, applies the environment overrides and
//! checks the result; [`check`] does the same but reports every problem it can find instead
//! of a configuration. Secrets are never in the file: see [`Secrets`].
//!
//! Environment overrides: every key can be set by `ROBOT_<SECTION>_<KEY>` in upper case
//! (`ROBOT_SERVER_LISTEN`, `ROBOT_JOBS_CONCURRENCY`, `ROBOT_WAZZUP_CHANNEL_IDS=a,b`), plus the
//! short [`ALIASES`] `ROBOT_LISTEN` and `ROBOT_DATA_DIR`. A variable wins over the file;
//! setting a key of an absent optional section (`ROBOT_AMOCRM_SUBDOMAIN`) creates the section.
//! The value is read as the key's type: text as is, numbers as numbers, lists
//! comma-separated. Keys that hold tables of their own (`[fields.leads]`) have no variable.
//!
//! How it works: the file is parsed into a tree that remembers where each value came from
//! (`toml::de::DeTable`), environment values are put into the same tree with made-up
//! positions past the end of the file, and each section is deserialized from it; an error's
//! position then tells the line in the file or the variable.
#![warn(missing_docs)]

pub mod chains;
pub mod condition;
pub mod duration;
mod env;
pub mod managers;
mod problem;
mod robot;
pub mod routing;
pub mod rules;
pub mod scoring;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use duration::{Span, SpanError};
pub use env::{
    ALIASES, AMOCRM_CLIENT_SECRET_VAR, AMOCRM_TOKEN_VAR, BITRIX24_APP_TOKEN_VAR,
    BITRIX24_CLIENT_SECRET_VAR, BITRIX24_WEBHOOK_VAR, CONFIG_DIR_VAR, Env, HOOK_SECRET_VAR, PREFIX,
    PRESENCE_TOKEN_VAR, SMTP_URL_VAR, Secrets, WAZZUP_KEY_VAR,
};
pub use problem::{ConfigErrors, Problem, Severity};
pub use robot::{
    AmocrmConfig, B24Entity, Bitrix24Config, CatchupConfig, CrmConfig, CrmKind, FieldName,
    FieldsConfig, JobsConfig, PresenceConfig, RobotConfig, ServerConfig, SmtpConfig,
    StorageBackend, StorageConfig, StorageUrl, StorageUrlError, TodoVia, WazzupConfig,
};

use env::{KeySpec, Kind, Override};

/// The service file's name inside the configuration directory.
pub const FILE_NAME: &str = "robot.toml";

/// Reads `dir/robot.toml` (defaults when the file is absent), applies the overrides from
/// `env` and checks the result.
///
/// `dir` must exist: a missing directory is an error, since it means the robot was pointed
/// at the wrong place. Warnings (such as a misspelt `ROBOT_*` variable) do not stop loading;
/// they are logged, and [`check`] reports them.
pub fn load(dir: &Path, env: &Env) -> Result<RobotConfig, ConfigErrors> {
    let Outcome { config, problems } = evaluate(dir, env);
    let (errors, warnings): (Vec<_>, Vec<_>) = problems.into_iter().partition(Problem::is_error);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors(errors)),
    }
}

/// Every problem with `dir/robot.toml` and the `ROBOT_*` variables in `env`, errors and
/// warnings, placed by line where they are in the file; empty when all is well.
pub fn check(dir: &Path, env: &Env) -> Vec<Problem> {
    let Outcome {
        config,
        mut problems,
    } = evaluate(dir, env);
    let fresh_for = config
        .as_ref()
        .and_then(|c| c.presence.fresh_for.as_std())
        .unwrap_or(std::time::Duration::from_secs(120));
    let lead_fields: Option<Vec<String>> = config.map(|c| c.fields.leads.keys().cloned().collect());
    let refusals: Option<Vec<String>> = match scoring::load(dir, lead_fields.as_deref()) {
        Ok(rules) => rules.map(|r| {
            r.priority
                .refusals
                .iter()
                .map(|refusal| refusal.name.clone())
                .collect()
        }),
        Err(more) => {
            problems.extend(more);
            None
        }
    };
    let (roster, more) = managers::check(dir);
    problems.extend(more);
    let known = chains::Known {
        lead_fields: lead_fields.as_deref(),
        refusals: refusals.as_deref(),
        zone: roster.as_ref().map(|r| r.zone),
    };
    problems.extend(chains::check(dir, known).1);
    match roster {
        Some(roster) => {
            let known = routing::Known {
                roster: &roster,
                lead_fields: lead_fields.as_deref(),
                fresh_for,
            };
            problems.extend(routing::check(dir, known).1);
        }
        // Without a usable roster routing.toml cannot be checked; say so only when the
        // roster is missing rather than wrong (its own problems are listed already).
        None if !dir.join(managers::FILE_NAME).exists()
            && dir.join(routing::FILE_NAME).exists() =>
        {
            problems.push(Problem::error(
                dir.join(routing::FILE_NAME),
                format!(
                    "{} needs {} beside it: the groups and managers it routes to",
                    routing::FILE_NAME,
                    managers::FILE_NAME
                ),
            ));
        }
        None => {}
    }
    problems
}

struct Outcome {
    /// `None` when the file could not be read or parsed; otherwise the result, which is
    /// usable only when no problem is an error.
    config: Option<RobotConfig>,
    problems: Vec<Problem>,
}

fn evaluate(dir: &Path, env: &Env) -> Outcome {
    let file = dir.join(FILE_NAME);
    let schema = env::schema();
    let (overrides, mut problems) = env::overrides(&file, env, &schema);
    problems.extend(env::unknown_vars(&file, env, &schema));
    let text = match read(dir, &file) {
        Ok(text) => text,
        Err(problem) => {
            problems.insert(0, problem);
            return finish(None, problems);
        }
    };

    let (root, syntax) = DeTable::parse_recoverable(&text);
    if !syntax.is_empty() {
        // The tree after a syntax error is a guess; checking it would report phantoms.
        for error in syntax {
            let message = error.message().trim().replace('\n', "; ");
            let hint = error
                .span()
                .and_then(|span| syntax_hint(&text, span.start, &message));
            let p = Problem::error(&file, message).with_hint_opt(hint);
            problems.push(match error.span() {
                Some(span) => p.at_offset(&text, span.start),
                None => p,
            });
        }
        return finish(None, problems);
    }

    let mut doc = Doc {
        file: &file,
        text: &text,
        base: text.len() + 1,
        root: root.into_inner(),
        vars: Vec::new(),
        unread: Vec::new(),
    };
    doc.drop_unknown(&schema, &mut problems);
    for o in &overrides {
        doc.apply(o);
    }
    let config = doc.deserialize(&mut problems);
    problems.extend(robot::validate(&config, &doc));
    finish(Some(config), problems)
}

/// What to do about a syntax error, where the parser's words are not enough.
fn syntax_hint(text: &str, offset: usize, message: &str) -> Option<String> {
    if !message.starts_with("invalid unquoted key") {
        return None;
    }
    // The last table header above the error says which kind of key it is.
    let before = text.get(..offset)?;
    let header = before
        .lines()
        .rev()
        .map(str::trim_start)
        .find(|line| line.starts_with('['))
        .unwrap_or_default();
    Some(if header.starts_with("[fields.") {
        "on the left goes the robot's own name for the field, like `category`; the CRM's name \
         goes on the right, in quotes, like \"Категория\""
            .into()
    } else {
        "a name on the left of `=` is written in Latin letters, digits, `-` and `_`".into()
    })
}

/// Problems in the file first, by position; then the ones without a line, in the order found.
fn finish(config: Option<RobotConfig>, mut problems: Vec<Problem>) -> Outcome {
    problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
    Outcome { config, problems }
}

/// The file's text: empty when the file does not exist, an error when the directory does
/// not.
fn read(dir: &Path, file: &Path) -> Result<String, Problem> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(Problem::error(
                dir,
                "is a file, but the configuration must be a directory holding robot.toml",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(
                Problem::error(dir, "the configuration directory does not exist").with_hint(
                    format!("create it with {FILE_NAME} inside, or point {CONFIG_DIR_VAR} at the right one"),
                ),
            );
        }
        Err(e) => {
            return Err(Problem::error(
                dir,
                format!("the configuration directory cannot be opened: {e}"),
            ));
        }
    }
    match fs::read(file) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&e.into_bytes()[..valid]).into_owned();
            Problem::error(file, "the file is not UTF-8 text")
                .at_offset(&text, valid)
                .with_hint("save it in UTF-8 encoding")
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Problem::error(file, format!("cannot be read: {e}"))),
    }
}

/// Where a value came from.
enum Origin<'v> {
    /// A byte range of the file.
    File(Range<usize>),
    /// An environment variable.
    Env(&'v str),
}

/// The file's tree with the environment's values put in, and what is needed to say where
/// each value came from.
struct Doc<'a> {
    file: &'a Path,
    text: &'a str,
    /// Positions from here on stand for environment variables: `base + i` is `vars[i]`.
    base: usize,
    root: DeTable<'a>,
    vars: Vec<String>,
    /// Sections that did not deserialize (and hold defaults in the result).
    unread: Vec<&'static str>,
}

impl<'a> Doc<'a> {
    fn origin(&self, span: &Range<usize>) -> Origin<'_> {
        match span.start.checked_sub(self.base) {
            Some(i) if i < self.vars.len() => Origin::Env(&self.vars[i]),
            _ => Origin::File(span.clone()),
        }
    }

    /// A problem about `subject` (e.g. "`listen` in [server]") whose value is at `span`.
    fn problem_at(&self, span: &Range<usize>, subject: &str, message: &str) -> Problem {
        match self.origin(span) {
            Origin::File(range) => Problem::error(self.file, format!("{subject}: {message}"))
                .at_offset(self.text, range.start),
            Origin::Env(var) => {
                Problem::error(self.file, format!("{var} (sets {subject}): {message}"))
            }
        }
    }

    fn table(&self, section: &str) -> Option<&DeTable<'a>> {
        self.root.get(section).and_then(|v| v.get_ref().as_table())
    }

    fn value(&self, section: &str, key: &str) -> Option<&Spanned<DeValue<'a>>> {
        self.table(section).and_then(|t| t.get(key))
    }

    /// Reports and removes unknown sections and keys, so that each is reported once, all of
    /// them, and the rest of the file can still be checked.
    fn drop_unknown(&mut self, schema: &[KeySpec], problems: &mut Vec<Problem>) {
        let sections: BTreeSet<&str> = schema.iter().map(|s| s.section.as_str()).collect();
        let listed = |names: &mut dyn Iterator<Item = String>| names.collect::<Vec<_>>().join(", ");
        let mut unknown_sections = Vec::new();
        let mut unknown_keys = Vec::new();
        for (name, value) in self.root.iter() {
            let name_str: &str = name.get_ref();
            let at = |message: String, hint: Option<String>| {
                Problem::error(self.file, message)
                    .at_offset(self.text, name.span().start)
                    .with_hint_opt(hint)
            };
            let Some(table) = value.get_ref().as_table() else {
                let problem = if sections.contains(name_str) {
                    at(
                        format!("`{name_str}` must be a section"),
                        Some(format!(
                            "write [{name_str}] on a line of its own, its keys below"
                        )),
                    )
                } else if let Some(owner) = schema.iter().find(|s| s.key == name_str) {
                    at(
                        format!("`{name_str}` must be inside a section"),
                        Some(if owner.kind == Kind::Table {
                            format!("write it as [{}.{name_str}]", owner.section)
                        } else {
                            format!("put it below [{}]", owner.section)
                        }),
                    )
                } else {
                    at(
                        format!("unknown field `{name_str}` outside any section"),
                        problem::did_you_mean(name_str, schema.iter().map(|s| s.key.as_str()))
                            .and_then(|key| schema.iter().find(|s| s.key == key))
                            .map(|s| format!("did you mean `{}` in [{}]?", s.key, s.section)),
                    )
                };
                problems.push(problem);
                unknown_sections.push(name_str.to_owned());
                continue;
            };
            if !sections.contains(name_str) {
                problems.push(at(
                    format!(
                        "unknown section [{name_str}], expected one of {}",
                        listed(&mut sections.iter().map(|s| format!("[{s}]")))
                    ),
                    problem::did_you_mean(name_str, sections.iter().copied())
                        .map(|s| format!("did you mean [{s}]?")),
                ));
                unknown_sections.push(name_str.to_owned());
                continue;
            }
            let keys: Vec<&str> = schema
                .iter()
                .filter(|s| s.section == name_str)
                .map(|s| s.key.as_str())
                .collect();
            let of_tables = schema
                .iter()
                .any(|s| s.section == name_str && s.kind == Kind::Table);
            for (key, value) in table.iter() {
                let key_str: &str = key.get_ref();
                if keys.contains(&key_str) {
                    continue;
                }
                if of_tables {
                    problems.push(self.unknown_sub_table(name_str, key, value, &keys));
                    unknown_keys.push((name_str.to_owned(), key_str.to_owned()));
                    continue;
                }
                problems.push(
                    Problem::error(
                        self.file,
                        format!(
                            "unknown field `{key_str}` in [{name_str}], expected one of {}",
                            listed(&mut keys.iter().map(|k| format!("`{k}`")))
                        ),
                    )
                    .at_offset(self.text, key.span().start)
                    .with_hint_opt(
                        problem::did_you_mean(key_str, keys.iter().copied())
                            .map(|k| format!("did you mean `{k}`?")),
                    ),
                );
                unknown_keys.push((name_str.to_owned(), key_str.to_owned()));
            }
        }
        for name in unknown_sections {
            self.root.remove(name.as_str());
        }
        for (section, key) in unknown_keys {
            if let Some(DeValue::Table(table)) =
                self.root.get_mut(section.as_str()).map(|v| v.get_mut())
            {
                table.remove(key.as_str());
            }
        }
    }

    /// The problem with an unknown key in a section of tables (`[fields.deals]`): it names
    /// the tables, and the right one when it is near or the CRM's word for it.
    fn unknown_sub_table(
        &self,
        section: &str,
        key: &Spanned<Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
        tables: &[&str],
    ) -> Problem {
        let name: &str = key.get_ref();
        let listed = tables
            .iter()
            .map(|t| format!("[{section}.{t}]"))
            .collect::<Vec<_>>()
            .join(", ");
        let (message, hint) = if value.get_ref().is_table() {
            let meant = problem::did_you_mean(name, tables.iter().copied()).or_else(|| {
                SYNONYMS
                    .iter()
                    .find(|(s, word, _)| *s == section && word.eq_ignore_ascii_case(name))
                    .map(|(_, _, meant)| *meant)
            });
            (
                format!("unknown table [{section}.{name}], expected one of {listed}"),
                meant.map(|t| format!("did you mean `{t}`?")),
            )
        } else {
            // `[fields]` with keys straight below it: the record's table was forgotten.
            (
                format!("`{name}` cannot be directly in [{section}], only in one of {listed}"),
                Some(format!(
                    "write [{section}.{}] above it, or the table of the kind of record it \
                     belongs to",
                    // Leads are what most fields belong to.
                    tables
                        .iter()
                        .find(|t| **t == "leads")
                        .or(tables.first())
                        .copied()
                        .unwrap_or_default()
                )),
            )
        };
        Problem::error(self.file, message)
            .at_offset(self.text, key.span().start)
            .with_hint_opt(hint)
    }

    /// Puts an environment value into the tree, creating its section when the file has
    /// none, at a made-up position that stands for the variable.
    fn apply(&mut self, o: &'a Override) {
        let at = self.base + self.vars.len();
        let span = at..at + 1;
        self.vars.push(o.var.clone());
        let value =
            DeValue::parse(&o.literal).expect("a literal printed from a toml::Value parses back");
        let section = self
            .root
            .entry(Spanned::new(
                span.clone(),
                Cow::Borrowed(o.section.as_str()),
            ))
            .or_insert_with(|| Spanned::new(span.clone(), DeValue::Table(DeTable::new())));
        if let DeValue::Table(table) = section.get_mut() {
            table.insert(
                Spanned::new(span.clone(), Cow::Borrowed(o.key.as_str())),
                respan(value, &span),
            );
        }
    }

    /// The configuration, with defaults for the sections that do not deserialize (their
    /// problems are reported and their names kept in `unread`), so the other sections can
    /// still be checked.
    fn deserialize(&mut self, problems: &mut Vec<Problem>) -> RobotConfig {
        let server = self.section("server", problems);
        let storage = self.section("storage", problems);
        let jobs = self.section("jobs", problems);
        let crm = self.section("crm", problems);
        let amocrm = self.section("amocrm", problems);
        let bitrix24 = self.section("bitrix24", problems);
        let fields = self.section("fields", problems);
        let wazzup = self.section("wazzup", problems);
        let smtp = self.section("smtp", problems);
        let presence = self.section("presence", problems);
        let catchup = self.section("catchup", problems);
        RobotConfig {
            server: server.unwrap_or_default(),
            storage: storage.unwrap_or_default(),
            jobs: jobs.unwrap_or_default(),
            crm: crm.unwrap_or_default(),
            amocrm,
            bitrix24,
            fields: fields.unwrap_or_default(),
            wazzup: wazzup.unwrap_or_default(),
            smtp: smtp.unwrap_or_default(),
            presence: presence.unwrap_or_default(),
            catchup: catchup.unwrap_or_default(),
        }
    }

    /// The section, or `None` when it is absent or, after reporting why, does not
    /// deserialize.
    fn section<T: DeserializeOwned>(
        &mut self,
        name: &'static str,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        let value = self.root.get(name)?;
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(section) => Some(section),
            Err(error) => {
                problems.push(self.de_problem(name, &error));
                self.unread.push(name);
                None
            }
        }
    }

    fn de_problem(&self, section: &str, error: &toml::de::Error) -> Problem {
        let message = &humanize(error.message());
        let Some(span) = error.span() else {
            return Problem::error(self.file, format!("[{section}]: {message}"));
        };
        if let Some(field) = message.strip_prefix("missing field ") {
            let key = field.trim_matches('`');
            let var = format!("{PREFIX}{section}_{key}").to_uppercase();
            return match self.origin(&span) {
                Origin::File(range) => {
                    Problem::error(self.file, format!("[{section}] needs {field}"))
                        .at_offset(self.text, range.start)
                }
                Origin::Env(by) => Problem::error(
                    self.file,
                    format!("[{section}] is switched on by {by}, but has no {field}"),
                )
                .with_hint(format!(
                    "set {var} too, or write [{section}] in {FILE_NAME}"
                )),
            };
        }
        let mut path = vec![section.to_owned()];
        if let Some(table) = self.table(section) {
            locate(table, span.start, &mut path);
        }
        let subject = match path.split_last() {
            Some((key, tables)) if !tables.is_empty() => {
                format!("`{key}` in [{}]", tables.join("."))
            }
            _ => format!("[{section}]"),
        };
        self.problem_at(&span, &subject, message)
    }

    /// The key at `path` (tables, then the key) with its value.
    fn entry(&self, path: &[&str]) -> Option<(&Spanned<Cow<'a, str>>, &Spanned<DeValue<'a>>)> {
        let (last, tables) = path.split_last()?;
        let mut table = &self.root;
        for name in tables {
            table = table.get(*name)?.get_ref().as_table()?;
        }
        table.get_key_value(*last)
    }
}

/// Words people write for a table of a section, and the table meant: Bitrix24 calls the
/// robot's leads deals.
const SYNONYMS: &[(&str, &str, &str)] = &[
    ("fields", "deals", "leads"),
    ("fields", "deal", "leads"),
    ("fields", "company", "companies"),
];

/// Appends to `path` the keys, table inside table, whose key or value holds `offset`, so
/// that an error deep in a section names the key it is about.
fn locate(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) {
    let found = table
        .iter()
        .find(|(k, v)| v.span().contains(&offset) || k.span().contains(&offset))
        .or_else(|| {
            // A `[a.b]` table's span covers only its header; look inside each.
            table
                .iter()
                .find(|(_, v)| v.get_ref().as_table().is_some_and(|t| holds(t, offset)))
        });
    if let Some((key, value)) = found {
        path.push(key.get_ref().to_string());
        if let Some(inner) = value.get_ref().as_table() {
            locate(inner, offset, path);
        }
    }
}

/// Whether some key or value of `table`, at any depth, holds `offset`.
fn holds(table: &DeTable<'_>, offset: usize) -> bool {
    table.iter().any(|(k, v)| {
        k.span().contains(&offset)
            || v.span().contains(&offset)
            || v.get_ref().as_table().is_some_and(|t| holds(t, offset))
    })
}

/// Serde's messages name Rust types ("expected usize"); say what to write instead.
fn humanize(message: &str) -> String {
    const UNSIGNED: &str = "a whole number, 0 or more";
    const SAID: &[(&str, &str)] = &[
        ("usize", UNSIGNED),
        ("u64", UNSIGNED),
        ("u32", UNSIGNED),
        ("u16", UNSIGNED),
        ("u8", UNSIGNED),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("f64", "a number"),
        ("a boolean", "true or false"),
        ("a string", "text in quotes"),
        ("a sequence", "a list in brackets, like [\"a\", \"b\"]"),
        ("a map", "a table of `name = value` lines"),
    ];
    for (rust, words) in SAID {
        if let Some(head) = message.strip_suffix(&format!("expected {rust}")) {
            return format!("{head}expected {words}");
        }
    }
    message.to_owned()
}

/// Gives a value parsed from an environment literal, and everything in it, the variable's
/// made-up position.
fn respan<'a>(value: Spanned<DeValue<'a>>, span: &Range<usize>) -> Spanned<DeValue<'a>> {
    let mut inner = value.into_inner();
    if let DeValue::Array(items) = &mut inner {
        for item in items.iter_mut() {
            let taken = std::mem::replace(item, Spanned::new(0..0, DeValue::Boolean(false)));
            *item = respan(taken, span);
        }
    }
    Spanned::new(span.clone(), inner)
}

/// Lets [`robot::validate`] place a problem by key without knowing about spans.
pub(crate) trait Places {
    /// A problem about `key` in `section`, at its line, or naming its variable, or saying
    /// it is the default.
    fn problem(&self, section: &str, key: &str, message: String) -> Problem;
    /// Whether the file or the environment sets the key.
    fn is_set(&self, section: &str, key: &str) -> bool;
    /// Whether the file (not the environment) sets the key.
    fn set_in_file(&self, section: &str, key: &str) -> bool;
    /// Whether the section deserialized, so its values are the user's and worth checking.
    fn was_read(&self, section: &str) -> bool;
    /// `message` as it is, at the key's line, or naming its variable; for messages that name
    /// the key themselves.
    fn at_key(&self, section: &str, key: &str, message: String) -> Problem;
    /// A problem about `key` of a table inside a section (`table` = `["fields", "leads"]`),
    /// at the key itself.
    fn nested(&self, table: &[&str], key: &str, message: String) -> Problem;
}

impl Places for Doc<'_> {
    fn problem(&self, section: &str, key: &str, message: String) -> Problem {
        let subject = format!("`{key}` in [{section}]");
        match self.value(section, key) {
            Some(value) => self.problem_at(&value.span(), &subject, &message),
            None => Problem::error(self.file, format!("{subject} (the default): {message}")),
        }
    }

    fn is_set(&self, section: &str, key: &str) -> bool {
        self.value(section, key).is_some()
    }

    fn set_in_file(&self, section: &str, key: &str) -> bool {
        self.value(section, key)
            .is_some_and(|v| matches!(self.origin(&v.span()), Origin::File(_)))
    }

    fn was_read(&self, section: &str) -> bool {
        !self.unread.contains(&section)
    }

    fn at_key(&self, section: &str, key: &str, message: String) -> Problem {
        match self.value(section, key).map(|v| self.origin(&v.span())) {
            Some(Origin::File(range)) => {
                Problem::error(self.file, message).at_offset(self.text, range.start)
            }
            Some(Origin::Env(var)) => Problem::error(self.file, format!("{var}: {message}")),
            None => Problem::error(self.file, format!("{message} (the default)")),
        }
    }

    fn nested(&self, table: &[&str], key: &str, message: String) -> Problem {
        let subject = format!("`{key}` in [{}]", table.join("."));
        let path: Vec<&str> = table.iter().copied().chain([key]).collect();
        match self.entry(&path) {
            Some((k, _)) => self.problem_at(&k.span(), &subject, &message),
            None => Problem::error(self.file, format!("{subject}: {message}")),
        }
    }
}
