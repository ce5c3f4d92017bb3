//! Loading `robot.toml` end to end: files in temporary directories, environments given as
//! pairs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use tempfile::TempDir;

use super::*;

fn dir_with(text: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
    dir
}

fn load_str(text: &str, env: &[(&str, &str)]) -> Result<RobotConfig, ConfigErrors> {
    let dir = dir_with(text);
    load(dir.path(), &Env::from_pairs(env.iter().copied()))
}

fn check_str(text: &str, env: &[(&str, &str)]) -> Vec<Problem> {
    let dir = dir_with(text);
    check(dir.path(), &Env::from_pairs(env.iter().copied()))
}

/// The only problem `check` finds, which the test expects to be an error.
fn only_problem(text: &str, env: &[(&str, &str)]) -> Problem {
    let problems = check_str(text, env);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = problems.into_iter().next().unwrap();
    assert!(p.is_error(), "{p}");
    assert!(
        load_str(text, env).is_err(),
        "load must fail where check errs"
    );
    p
}

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let config = load_str("", &[]).unwrap();
    assert_eq!(config, RobotConfig::default());
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.server.base_url(), "http://127.0.0.1:8080");
    assert_eq!(config.server.data_dir, PathBuf::from("data"));
    assert_eq!(config.server.body_limit, 1_048_576);
    assert_eq!(config.server.request_timeout, Span::seconds(10));
    assert_eq!(config.storage.url.as_str(), "sqlite://robot.db");
    assert_eq!(config.storage.dedup_window, Span::days(7));
    assert_eq!(config.storage.namespace, "sales-robot");
    assert_eq!(config.jobs.concurrency, 4);
    assert_eq!(config.jobs.max_attempts, 8);
    assert_eq!(config.jobs.backoff_base, Span::seconds(10));
    assert_eq!(config.jobs.backoff_max, Span::hours(1));
    assert_eq!(config.jobs.shutdown_grace, Span::seconds(30));
    assert_eq!(config.crm.kind, CrmKind::Amocrm);
    assert_eq!(config.amocrm, None);
    assert_eq!(config.bitrix24, None);
    assert_eq!(config.fields, FieldsConfig::default());
    assert!(config.wazzup.channel_ids.is_empty());
    assert_eq!(config.presence.fresh_for, Span::minutes(2));
    assert_eq!(
        config.storage_backend(),
        StorageBackend::Sqlite {
            path: PathBuf::from("data/robot.db")
        }
    );
    assert!(check_str("", &[]).is_empty());
}

#[test]
fn a_missing_file_gives_the_defaults_but_a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        load(dir.path(), &Env::default()).unwrap(),
        RobotConfig::default()
    );

    let gone = dir.path().join("nope");
    let errors = load(&gone, &Env::default()).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].file, gone);
    assert!(errors.to_string().contains("does not exist"), "{errors}");
    assert!(
        errors.0[0]
            .hint
            .as_deref()
            .unwrap()
            .contains(CONFIG_DIR_VAR)
    );

    let not_a_dir = dir.path().join(FILE_NAME);
    std::fs::write(&not_a_dir, "").unwrap();
    assert!(load(&not_a_dir, &Env::default()).is_err());
}

fn mapping(pairs: &[(&str, &str)]) -> BTreeMap<String, FieldName> {
    pairs
        .iter()
        .map(|(ours, theirs)| ((*ours).to_owned(), FieldName((*theirs).to_owned())))
        .collect()
}

#[test]
fn the_shipped_file_loads_with_the_demo_account() {
    let config = load(&shipped_dir(), &Env::default()).unwrap();
    assert_eq!(config.crm.kind, CrmKind::Amocrm);
    let amo = config.amocrm.as_ref().unwrap();
    assert_eq!(
        amo,
        &AmocrmConfig {
            account_id: Some(29_876_543),
            ..AmocrmConfig::new("robotdemo")
        }
    );
    assert_eq!(amo.base_url(), "https://robotdemo.amocrm.ru");
    assert_eq!(amo.rate_per_second, 7.0);
    assert_eq!(
        config.bitrix24,
        Some(Bitrix24Config::new("robotdemo.bitrix24.ru"))
    );
    assert_eq!(
        config.fields,
        FieldsConfig {
            leads: mapping(&[
                ("site", "Сайт"),
                ("channel", "Канал"),
                ("category", "Категория"),
                ("brand", "Бренд"),
                ("score", "Скоринг"),
                ("priority", "Приоритет"),
                ("expected_profit", "Ожидаемая прибыль"),
            ]),
            contacts: BTreeMap::new(),
            companies: mapping(&[("inn", "ИНН"), ("okved", "ОКВЭД"), ("turnover", "Оборот")]),
        }
    );
    // Apart from the demo account and its fields, the shipped file holds the defaults.
    assert_eq!(
        RobotConfig {
            amocrm: None,
            bitrix24: None,
            fields: FieldsConfig::default(),
            ..config
        },
        RobotConfig::default()
    );
    assert_eq!(check(&shipped_dir(), &Env::default()), vec![]);
}

#[test]
fn the_shipped_file_shows_every_key() {
    let text = std::fs::read_to_string(shipped_dir().join(FILE_NAME)).unwrap();
    for spec in env::schema() {
        // A table is shown by its header, even when the demo account has nothing for it.
        if !spec.has_var() {
            let header = format!("\n[{}.{}]\n", spec.section, spec.key);
            assert!(text.contains(&header), "robot.toml does not show {header}");
            continue;
        }
        let header = format!("\n[{}]\n", spec.section);
        let start = text
            .find(&header)
            .unwrap_or_else(|| panic!("no [{}]", spec.section));
        let block = &text[start + header.len()..];
        let block = &block[..block.find("\n[").unwrap_or(block.len())];
        assert!(
            block.contains(&format!("{} = ", spec.key)),
            "robot.toml does not show `{}` in [{}]",
            spec.key,
            spec.section
        );
    }
}

#[test]
fn environment_overrides_every_kind_of_key() {
    let file = "[server]\nlisten = \"127.0.0.1:9000\"\n\n[jobs]\nconcurrency = 2\n";
    let config = load_str(
        file,
        &[
            ("ROBOT_LISTEN", "0.0.0.0:8081"),
            ("ROBOT_DATA_DIR", "/var/lib/robot"),
            ("ROBOT_SERVER_PUBLIC_URL", "https://robot.example.ru/"),
            ("ROBOT_SERVER_BODY_LIMIT", "2048"),
            ("ROBOT_JOBS_CONCURRENCY", "16"),
            ("ROBOT_JOBS_BACKOFF_MAX", "2h"),
            ("ROBOT_STORAGE_URL", "redis://:pw@redis:6379/1"),
            ("ROBOT_AMOCRM_SUBDOMAIN", "acme"),
            ("ROBOT_WAZZUP_CHANNEL_IDS", "chan-1, chan-2"),
            ("ROBOT_PRESENCE_FRESH_FOR", "5m"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8081");
    assert_eq!(config.server.data_dir, PathBuf::from("/var/lib/robot"));
    assert_eq!(config.server.base_url(), "https://robot.example.ru");
    assert_eq!(config.server.body_limit, 2048);
    assert_eq!(config.jobs.concurrency, 16);
    assert_eq!(config.jobs.max_attempts, 8, "untouched keys keep defaults");
    assert_eq!(config.jobs.backoff_max, Span::hours(2));
    assert_eq!(
        config.storage_backend(),
        StorageBackend::Redis {
            url: "redis://:pw@redis:6379/1".into()
        }
    );
    assert_eq!(config.amocrm, Some(AmocrmConfig::new("acme")));
    assert_eq!(config.wazzup.channel_ids, ["chan-1", "chan-2"]);
    assert_eq!(config.presence.fresh_for, Span::minutes(5));
}

#[test]
fn full_names_and_aliases_agree_or_conflict() {
    let same = load_str(
        "",
        &[
            ("ROBOT_LISTEN", "0.0.0.0:1"),
            ("ROBOT_SERVER_LISTEN", "0.0.0.0:1"),
            ("ROBOT_SERVER_PUBLIC_URL", "http://robot"),
        ],
    );
    assert_eq!(same.unwrap().server.listen.port(), 1);
    let p = only_problem(
        "",
        &[
            ("ROBOT_LISTEN", "0.0.0.0:1"),
            ("ROBOT_SERVER_LISTEN", "0.0.0.0:2"),
            ("ROBOT_SERVER_PUBLIC_URL", "http://robot"),
        ],
    );
    assert!(
        p.message.contains("ROBOT_SERVER_LISTEN and ROBOT_LISTEN"),
        "{p}"
    );
}

#[test]
fn an_env_value_that_does_not_parse_names_the_variable() {
    let p = only_problem("", &[("ROBOT_JOBS_CONCURRENCY", "four")]);
    assert_eq!(p.line, None);
    assert!(p.message.contains("ROBOT_JOBS_CONCURRENCY=`four`"), "{p}");
    assert!(p.message.contains("expected a whole number"), "{p}");

    let p = only_problem("", &[("ROBOT_PRESENCE_FRESH_FOR", "2 minutes")]);
    assert_eq!(p.line, None);
    assert!(p.message.starts_with("ROBOT_PRESENCE_FRESH_FOR "), "{p}");
    assert!(p.message.contains("\"10m\""), "{p}");

    let p = only_problem(
        "[storage]\nurl = \"sqlite://x.db\"\n",
        &[("ROBOT_STORAGE_URL", "mysql://db")],
    );
    assert_eq!(p.line, None, "the value came from the environment: {p}");
    assert!(
        p.message
            .starts_with("ROBOT_STORAGE_URL (sets `url` in [storage])"),
        "{p}"
    );

    let p = only_problem("", &[("ROBOT_JOBS_BACKOFF_BASE", "2bd")]);
    assert_eq!(p.line, None);
    assert!(p.message.contains("ROBOT_JOBS_BACKOFF_BASE"), "{p}");
    assert!(p.message.contains("business days"), "{p}");
}

#[test]
fn a_section_switched_on_from_the_environment_needs_its_required_keys() {
    let p = only_problem("", &[("ROBOT_AMOCRM_ACCOUNT_ID", "42")]);
    assert!(p.message.contains("ROBOT_AMOCRM_ACCOUNT_ID"), "{p}");
    assert!(p.message.contains("`subdomain`"), "{p}");
    assert!(
        p.hint
            .as_deref()
            .unwrap()
            .contains("ROBOT_AMOCRM_SUBDOMAIN"),
        "{p}"
    );
}

#[test]
fn a_typo_gives_file_line_column_and_a_hint() {
    let text = "# комментарий\n[server]\nlisen = \"0.0.0.0:8080\"\n";
    let p = only_problem(text, &[]);
    assert_eq!((p.line, p.column), (Some(3), Some(1)));
    assert_eq!(p.hint.as_deref(), Some("did you mean `listen`?"));
    let shown = p.to_string();
    assert!(
        shown.ends_with(
            "robot.toml:3:1: unknown field `lisen` in [server], expected one of `body_limit`, \
             `data_dir`, `listen`, `public_url`, `request_timeout` (did you mean `listen`?)"
        ),
        "{shown}"
    );

    let p = only_problem("[sever]\nlisten = \"0.0.0.0:8080\"\n", &[]);
    assert_eq!(p.line, Some(1));
    assert_eq!(p.hint.as_deref(), Some("did you mean [server]?"));

    let p = only_problem("listen = \"0.0.0.0:8080\"\n", &[]);
    assert_eq!(p.hint.as_deref(), Some("put it below [server]"));
}

#[test]
fn a_wrong_type_names_the_key_and_its_line() {
    let p = only_problem("[jobs]\nmax_attempts = 3\nconcurrency = \"four\"\n", &[]);
    assert_eq!((p.line, p.column), (Some(3), Some(15)));
    assert!(
        p.message
            .starts_with("`concurrency` in [jobs]: invalid type"),
        "{p}"
    );

    let p = only_problem("[server]\nrequest_timeout = 10\n", &[]);
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("has no unit"), "{p}");

    let p = only_problem("[server]\nlisten = \"localhost:8080\"\n", &[]);
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("127.0.0.1:8080"), "{p}");
}

#[test]
fn a_bad_storage_url_names_its_line() {
    let p = only_problem("[storage]\nnamespace = \"a\"\nurl = \"robot.db\"\n", &[]);
    assert_eq!((p.line, p.column), (Some(3), Some(7)));
    assert!(p.message.starts_with("`url` in [storage]: "), "{p}");
    assert!(p.message.contains("\"sqlite://robot.db\""), "{p}");

    let p = only_problem("[storage]\nurl = \"redis://:pw@redis:6379\"\n", &[]);
    assert_eq!(p.line, Some(2));
    assert!(
        p.hint.as_deref().unwrap().contains("ROBOT_STORAGE_URL"),
        "{p}"
    );
    assert!(!p.to_string().contains("pw@"), "{p}");
}

#[test]
fn business_days_are_refused_where_calendar_time_is_needed() {
    let p = only_problem("[jobs]\n\nbackoff_max = \"3bd\"\n", &[]);
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("`backoff_max` in [jobs]"), "{p}");
    assert!(p.message.contains("business days"), "{p}");
    assert!(p.hint.as_deref().unwrap().contains("\"3d\""), "{p}");
}

#[test]
fn semantic_checks_name_the_line() {
    let p = only_problem("[jobs]\nconcurrency = 0\n", &[]);
    assert_eq!(p.line, Some(2));

    let p = only_problem("[jobs]\nbackoff_base = \"2h\"\n", &[]);
    assert_eq!(p.line, Some(2), "only backoff_base is written: {p}");
    assert!(
        p.message
            .contains("2h for `backoff_base` is longer than 1h"),
        "{p}"
    );

    let p = only_problem("[amocrm]\nsubdomain = \"\"\n", &[]);
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("is empty"), "{p}");

    let p = only_problem("[amocrm]\nsubdomain = \"acme.amocrm.ru\"\n", &[]);
    assert_eq!(p.hint.as_deref(), Some("did you mean `acme`?"));

    let p = only_problem("[bitrix24]\ndomain = \"https://acme.bitrix24.ru/\"\n", &[]);
    assert!(p.hint.unwrap().contains("`acme.bitrix24.ru`"));

    let p = only_problem("[amocrm]\naccount_id = 1\n", &[]);
    assert_eq!(p.line, Some(1), "points at the section: {p}");
    assert!(p.message.contains("[amocrm] needs `subdomain`"), "{p}");
}

#[test]
fn listening_everywhere_without_a_public_url_is_a_warning() {
    let text = "[server]\nlisten = \"0.0.0.0:8080\"\n";
    assert!(load_str(text, &[]).is_ok());
    let problems = check_str(text, &[]);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].severity, Severity::Warning);
    assert!(problems[0].to_string().contains(": warning: "));
}

#[test]
fn check_reports_every_problem_in_file_order_then_the_environment() {
    let text = "\
[server]
lisen = \"0.0.0.0:8080\"
[storage]
url = \"postgres://db\"
[jobs]
concurrency = 0
shutdown_grace = \"1bd\"
[presence]
fresh_for = \"soon\"
";
    let problems = check_str(
        text,
        &[
            ("ROBOT_SERVR_LISTEN", "x"),
            ("ROBOT_JOBS_MAX_ATTEMPTS", "many"),
        ],
    );
    let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
    assert_eq!(
        lines,
        [Some(2), Some(4), Some(6), Some(7), Some(9), None, None],
        "{problems:#?}"
    );
    assert!(problems[5].message.contains("ROBOT_JOBS_MAX_ATTEMPTS"));
    assert_eq!(problems[6].severity, Severity::Warning);
    assert_eq!(
        problems[6].hint.as_deref(),
        Some("did you mean ROBOT_SERVER_LISTEN?")
    );
}

#[test]
fn a_section_that_does_not_deserialize_does_not_hide_the_others() {
    let text = "[server]\nlisten = 80\n[jobs]\nconcurrency = 0\n";
    let lines: Vec<_> = check_str(text, &[]).iter().map(|p| p.line).collect();
    assert_eq!(lines, [Some(2), Some(4)]);
}

#[test]
fn semantic_problems_are_all_reported_once_types_are_right() {
    let text = "[jobs]\nconcurrency = 0\nmax_attempts = 0\nshutdown_grace = \"1bd\"\n";
    let problems = check_str(text, &[]);
    let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [Some(2), Some(3), Some(4)], "{problems:#?}");
}

#[test]
fn a_syntax_error_gives_its_place() {
    let p = only_problem("[server]\nlisten = \"0.0.0.0:8080\n", &[]);
    assert_eq!(p.line, Some(2), "{p}");
    let p = only_problem("[server]\nlisten = \"a\"\nlisten = \"b\"\n", &[]);
    assert_eq!(p.line, Some(3), "{p}");
}

#[test]
fn secrets_come_from_the_environment_and_stay_hidden() {
    let env = Env::from_pairs([
        (HOOK_SECRET_VAR, "hook-secret-value"),
        (PRESENCE_TOKEN_VAR, "presence-token-value"),
        (BITRIX24_APP_TOKEN_VAR, "bitrix-token-value"),
        (AMOCRM_TOKEN_VAR, "amo-long-lived-value"),
        (AMOCRM_CLIENT_SECRET_VAR, "amo-client-secret-value"),
        (
            BITRIX24_WEBHOOK_VAR,
            "https://robotdemo.bitrix24.ru/rest/1/webhook-token-value/",
        ),
        (BITRIX24_CLIENT_SECRET_VAR, "b24-client-secret-value"),
    ]);
    let secrets = Secrets::from_env(&env);
    assert_eq!(
        secrets.presence_token.as_ref().unwrap().expose_secret(),
        "presence-token-value"
    );
    assert_eq!(
        secrets.amocrm_token.as_ref().unwrap().expose_secret(),
        "amo-long-lived-value"
    );
    assert_eq!(
        secrets
            .amocrm_client_secret
            .as_ref()
            .unwrap()
            .expose_secret(),
        "amo-client-secret-value"
    );
    assert_eq!(
        secrets.bitrix24_webhook.as_ref().unwrap().expose_secret(),
        "https://robotdemo.bitrix24.ru/rest/1/webhook-token-value/"
    );
    assert_eq!(
        secrets
            .bitrix24_client_secret
            .as_ref()
            .unwrap()
            .expose_secret(),
        "b24-client-secret-value"
    );
    let shown = format!("{secrets:?}");
    for value in [
        "hook-secret-value",
        "presence-token-value",
        "bitrix-token-value",
        "amo-long-lived-value",
        "amo-client-secret-value",
        "webhook-token-value",
        "b24-client-secret-value",
    ] {
        assert!(!shown.contains(value), "{shown}");
    }
    // The secret variables are known names, not typos of settings, though the CRM ones
    // look like `ROBOT_<SECTION>_<KEY>`.
    let given: Vec<(&str, &str)> = [
        HOOK_SECRET_VAR,
        CONFIG_DIR_VAR,
        AMOCRM_TOKEN_VAR,
        AMOCRM_CLIENT_SECRET_VAR,
        BITRIX24_WEBHOOK_VAR,
        BITRIX24_CLIENT_SECRET_VAR,
        WAZZUP_KEY_VAR,
        SMTP_URL_VAR,
    ]
    .into_iter()
    .map(|var| (var, "x"))
    .collect();
    assert!(check_str("", &given).is_empty());
}

#[test]
fn the_chosen_crm_needs_its_section() {
    let p = only_problem(
        "[crm]\nkind = \"bitrix24\"\n\n[amocrm]\nsubdomain = \"acme\"\n",
        &[],
    );
    assert_eq!(
        (p.line, p.column),
        (Some(2), Some(8)),
        "at the kind line: {p}"
    );
    assert_eq!(
        p.message,
        "crm.kind is `bitrix24` but there is no [bitrix24] section"
    );
    assert!(
        p.hint.as_deref().unwrap().contains("kind = \"amocrm\""),
        "{p}"
    );

    let p = only_problem("[crm]\nkind = \"amocrm\"\n", &[]);
    assert_eq!(p.line, Some(2));
    assert!(p.hint.as_deref().unwrap().contains("`subdomain`"), "{p}");

    let p = only_problem("", &[("ROBOT_CRM_KIND", "bitrix24")]);
    assert_eq!(p.line, None);
    assert!(p.message.contains("ROBOT_CRM_KIND"), "{p}");

    let p = only_problem("[crm]\nkind = \"kommo\"\n", &[]);
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("`amocrm` or `bitrix24`"), "{p}");

    // Without `kind` nothing is asked for: an intake-only robot needs no CRM.
    assert!(check_str("[bitrix24]\ndomain = \"acme.bitrix24.ru\"\n", &[]).is_empty());
}

#[test]
fn the_crm_kind_is_overridden_from_the_environment() {
    let config = load(
        &shipped_dir(),
        &Env::from_pairs([("ROBOT_CRM_KIND", "bitrix24")]),
    )
    .unwrap();
    assert_eq!(config.crm.kind, CrmKind::Bitrix24);

    let config = load_str(
        "[bitrix24]\ndomain = \"acme.bitrix24.ru\"\n",
        &[
            ("ROBOT_CRM_KIND", "bitrix24"),
            ("ROBOT_BITRIX24_BURST", "10"),
            ("ROBOT_BITRIX24_RATE_PER_SECOND", "0.5"),
            ("ROBOT_BITRIX24_TODO_VIA", "task"),
        ],
    )
    .unwrap();
    assert_eq!(config.crm.kind, CrmKind::Bitrix24);
    let b24 = config.bitrix24.unwrap();
    assert_eq!((b24.burst, b24.rate_per_second), (10, 0.5));
    assert_eq!(b24.todo_via, TodoVia::Task);
}

#[test]
fn amocrm_api_settings_have_defaults_and_overrides() {
    let config = load_str("[amocrm]\nsubdomain = \"acme\"\n", &[]).unwrap();
    let amo = config.amocrm.unwrap();
    assert_eq!(amo.base_url(), "https://acme.amocrm.ru");
    assert_eq!(amo.rate_per_second, AmocrmConfig::DEFAULT_RATE_PER_SECOND);
    assert_eq!((amo.client_id, amo.redirect_uri), (None, None));

    let text = "[amocrm]\nsubdomain = \"acme\"\nbase_url = \"http://127.0.0.1:9000/\"\n\
                rate_per_second = 2.5\nclient_id = \"abc\"\nredirect_uri = \"https://r.example/cb\"\n";
    let amo = load_str(text, &[]).unwrap().amocrm.unwrap();
    assert_eq!(amo.base_url(), "http://127.0.0.1:9000");
    assert_eq!(amo.rate_per_second, 2.5);
    assert_eq!(amo.client_id.as_deref(), Some("abc"));

    let amo = load_str(text, &[("ROBOT_AMOCRM_RATE_PER_SECOND", "5")])
        .unwrap()
        .amocrm
        .unwrap();
    assert_eq!(amo.rate_per_second, 5.0);

    let b24 = load_str("[bitrix24]\ndomain = \"acme.bitrix24.ru\"\n", &[])
        .unwrap()
        .bitrix24
        .unwrap();
    assert_eq!(
        (b24.rate_per_second, b24.burst, b24.todo_via),
        (2.0, 50, TodoVia::Activity)
    );
}

#[test]
fn sending_settings_have_defaults_and_overrides() {
    let config = load_str("", &[]).unwrap();
    assert_eq!(config.wazzup.send_channel_id, None);
    assert_eq!(config.wazzup.base_url, "https://api.wazzup24.com");
    assert_eq!(config.smtp.from, None);
    assert_eq!(config.smtp.timeout, Span::seconds(30));

    let channel = "0c3f6b1e-8d2a-4c55-9f1e-5a7d2b9c4e10";
    let config = load_str(
        "[wazzup]\nchannel_ids = []\n",
        &[
            ("ROBOT_WAZZUP_SEND_CHANNEL_ID", channel),
            ("ROBOT_WAZZUP_BASE_URL", "http://127.0.0.1:9"),
            ("ROBOT_SMTP_FROM", "Отдел продаж <sales@example.ru>"),
            ("ROBOT_SMTP_TIMEOUT", "5s"),
        ],
    )
    .unwrap();
    assert_eq!(config.wazzup.send_channel_id.as_deref(), Some(channel));
    assert_eq!(config.wazzup.base_url, "http://127.0.0.1:9");
    assert_eq!(
        config.smtp.from.as_deref(),
        Some("Отдел продаж <sales@example.ru>")
    );
    assert_eq!(config.smtp.timeout, Span::seconds(5));
}

#[test]
fn sending_settings_are_checked() {
    let p = only_problem("[wazzup]\nsend_channel_id = \"my channel\"\n", &[]);
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("not a Wazzup channel id"), "{p}");

    let p = only_problem(
        "[wazzup]\nchannel_ids = [\"0c3f6b1e-8d2a-4c55-9f1e-5a7d2b9c4e10\"]\n\
         send_channel_id = \"11111111-2222-3333-4444-555555555555\"\n",
        &[],
    );
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("replies there would be ignored"), "{p}");

    let p = only_problem("[wazzup]\nbase_url = \"api.wazzup24.com\"\n", &[]);
    assert_eq!(p.line, Some(2));

    let p = only_problem("[smtp]\nfrom = \"отдел продаж\"\n", &[]);
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("not an e-mail address"), "{p}");
    let p = only_problem("", &[("ROBOT_SMTP_FROM", "sales at example")]);
    assert!(p.message.contains("ROBOT_SMTP_FROM"), "{p}");

    let p = only_problem("[smtp]\ntimeout = \"0s\"\n", &[]);
    assert_eq!(p.line, Some(2));
}

#[test]
fn amocrm_api_settings_are_checked() {
    let p = only_problem("[amocrm]\nsubdomain = \"acme\"\nclient_id = \"abc\"\n", &[]);
    assert_eq!(p.line, Some(3));
    assert!(p.message.starts_with("`client_id` in [amocrm]: "), "{p}");
    assert!(p.message.contains("`redirect_uri`"), "{p}");

    let p = only_problem(
        "[amocrm]\nsubdomain = \"acme\"\nbase_url = \"acme.amocrm.ru\"\n",
        &[],
    );
    assert_eq!(p.line, Some(3));
    assert!(
        p.hint
            .as_deref()
            .unwrap()
            .contains("https://acme.amocrm.ru"),
        "{p}"
    );

    let p = only_problem("[amocrm]\nsubdomain = \"acme\"\nrate_per_second = 0\n", &[]);
    assert_eq!(p.line, Some(3));
    let p = only_problem(
        "[amocrm]\nsubdomain = \"acme\"\nrate_per_second = nan\n",
        &[],
    );
    assert_eq!(p.line, Some(3));

    let p = only_problem("[bitrix24]\ndomain = \"a.bitrix24.ru\"\nburst = 0\n", &[]);
    assert_eq!(p.line, Some(3));
    let p = only_problem(
        "[bitrix24]\ndomain = \"a.bitrix24.ru\"\ntodo_via = \"tasks\"\n",
        &[],
    );
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("`activity` or `task`"), "{p}");
}

#[test]
fn field_ids_may_be_numbers() {
    let text = "[fields.companies]\ninn = \"ИНН\"\nokved = 512399\n\
                [fields.leads]\nscore = \"UF_CRM_1700000000\"\n";
    let fields = load_str(text, &[]).unwrap().fields;
    assert_eq!(fields.companies["okved"], FieldName("512399".into()));
    assert_eq!(fields.companies["inn"].as_str(), "ИНН");
    assert_eq!(fields.leads["score"].to_string(), "UF_CRM_1700000000");
    assert!(fields.contacts.is_empty());
}

#[test]
fn a_field_key_must_be_the_robots_own_name() {
    // Unquoted, it is not even TOML: the parser's error, with the same advice.
    let text = "[fields.leads]\ncategory = \"Категория\"\nКатегория = \"x\"\n";
    let p = only_problem(text, &[]);
    assert_eq!((p.line, p.column), (Some(3), Some(1)), "{p}");
    assert!(p.hint.as_deref().unwrap().contains("`category`"), "{p}");

    let text = "[fields.leads]\ncategory = \"Категория\"\n\"Категория\" = \"x\"\n";
    let p = only_problem(text, &[]);
    assert_eq!((p.line, p.column), (Some(3), Some(1)), "{p}");
    assert!(
        p.message.starts_with("`Категория` in [fields.leads]: "),
        "{p}"
    );
    assert!(p.hint.as_deref().unwrap().contains("`category`"), "{p}");

    let p = only_problem("[fields.companies]\nINN = \"ИНН\"\n", &[]);
    assert_eq!(p.line, Some(2));
    assert_eq!(p.hint.as_deref(), Some("did you mean `inn`?"));

    let p = only_problem("[fields.leads]\nscore = \"\"\n", &[]);
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("empty"), "{p}");

    let p = only_problem("[fields.leads]\nbrand = \"Бренд\"\nscore = true\n", &[]);
    assert_eq!(p.line, Some(3));
    assert!(p.message.starts_with("`score` in [fields.leads]: "), "{p}");
    assert!(p.message.contains("512399"), "{p}");
}

#[test]
fn an_unknown_fields_table_gets_a_hint() {
    let p = only_problem("[fields.leads]\n\n[fields.deals]\nbrand = \"Бренд\"\n", &[]);
    assert_eq!(p.line, Some(3), "{p}");
    assert!(p.message.contains("[fields.deals]"), "{p}");
    assert_eq!(p.hint.as_deref(), Some("did you mean `leads`?"));

    let p = only_problem("[fields.contact]\n", &[]);
    assert_eq!(p.hint.as_deref(), Some("did you mean `contacts`?"));

    let p = only_problem("[fields]\ncategory = \"Категория\"\n", &[]);
    assert_eq!(p.line, Some(2));
    assert!(p.hint.as_deref().unwrap().contains("[fields.leads]"), "{p}");
}

#[test]
fn fields_are_not_set_from_the_environment() {
    let problems = check_str("", &[("ROBOT_FIELDS_LEADS_CATEGORY", "Категория")]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].severity, Severity::Warning);
    assert!(
        problems[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("write it in robot.toml"),
        "{}",
        problems[0]
    );
}

#[test]
fn the_bitrix24_entity_is_deals_unless_leads_are_asked_for() {
    let config = load(
        &shipped_dir(),
        &Env::from_pairs([("ROBOT_CRM_KIND", "bitrix24")]),
    )
    .unwrap();
    assert_eq!(config.bitrix24.unwrap().entity, B24Entity::Deal);

    let b24 = load_str(
        "[bitrix24]\ndomain = \"acme.bitrix24.ru\"\n",
        &[("ROBOT_BITRIX24_ENTITY", "lead")],
    )
    .unwrap()
    .bitrix24
    .unwrap();
    assert_eq!(b24.entity, B24Entity::Lead);

    let p = only_problem(
        "[bitrix24]\ndomain = \"a.bitrix24.ru\"\nentity = \"leads\"\n",
        &[],
    );
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("`deal` or `lead`"), "{p}");
}

#[test]
fn the_bitrix24_application_has_defaults_and_overrides() {
    let b24 = load_str("[bitrix24]\ndomain = \"acme.bitrix24.ru\"\n", &[])
        .unwrap()
        .bitrix24
        .unwrap();
    assert_eq!(b24.client_id, None);
    assert_eq!(b24.client_endpoint(), "https://acme.bitrix24.ru/rest/");
    assert_eq!(b24.token_url, Bitrix24Config::DEFAULT_TOKEN_URL);

    let text = "[bitrix24]\ndomain = \"acme.bitrix24.ru\"\nclient_id = \"local.abc.123\"\n\
                client_endpoint = \"http://127.0.0.1:9000/rest/\"\n";
    let b24 = load_str(text, &[]).unwrap().bitrix24.unwrap();
    assert_eq!(b24.client_id.as_deref(), Some("local.abc.123"));
    assert_eq!(b24.client_endpoint(), "http://127.0.0.1:9000/rest/");

    let b24 = load_str(
        text,
        &[
            ("ROBOT_BITRIX24_CLIENT_ID", "local.def.456"),
            (
                "ROBOT_BITRIX24_TOKEN_URL",
                "http://127.0.0.1:9000/oauth/token/",
            ),
        ],
    )
    .unwrap()
    .bitrix24
    .unwrap();
    assert_eq!(b24.client_id.as_deref(), Some("local.def.456"));
    assert_eq!(b24.token_url, "http://127.0.0.1:9000/oauth/token/");
}

#[test]
fn the_bitrix24_application_settings_are_checked() {
    let p = only_problem(
        "[bitrix24]\ndomain = \"a.bitrix24.ru\"\nclient_id = \" \"\n",
        &[],
    );
    assert_eq!(p.line, Some(3));
    assert!(p.message.starts_with("`client_id` in [bitrix24]: "), "{p}");
    assert!(
        p.hint.as_deref().unwrap().contains(BITRIX24_WEBHOOK_VAR),
        "{p}"
    );

    let p = only_problem(
        "[bitrix24]\ndomain = \"a.bitrix24.ru\"\nclient_endpoint = \"a.bitrix24.ru/rest/\"\n",
        &[],
    );
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("not a web address"), "{p}");

    let p = only_problem(
        "[bitrix24]\ndomain = \"a.bitrix24.ru\"\n",
        &[("ROBOT_BITRIX24_TOKEN_URL", "oauth.bitrix.info/oauth/token/")],
    );
    assert!(p.message.contains("ROBOT_BITRIX24_TOKEN_URL"), "{p}");
    assert!(
        p.hint
            .as_deref()
            .unwrap()
            .contains(Bitrix24Config::DEFAULT_TOKEN_URL),
        "{p}"
    );
}
