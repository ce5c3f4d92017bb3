//! `sales-robot replay FILE… [--to URL | --dry-run]`: what support staff use to reproduce a
//! customer's case from the bodies under `fixtures/`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use secrecy::ExposeSecret;

use crate::adapters::webhook::Parsed;
use crate::adapters::{amocrm, bitrix24, wazzup};
use crate::cli::context;
use crate::service::intake::parse_presence;

/// Arguments of `replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Body files; the folder each is in names its route: `amocrm/`, `bitrix24/`, `wazzup/`,
    /// `presence/`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The running robot to post to.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        conflicts_with = "dry_run"
    )]
    pub to: String,
    /// Post nothing: print the events each body parses into, one JSON object a line.
    #[arg(long)]
    pub dry_run: bool,
}

/// Which route a body file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /hooks/amocrm/{secret}`
    Amocrm,
    /// `POST /hooks/bitrix24/{secret}`
    Bitrix24,
    /// `POST /hooks/wazzup/{secret}`
    Wazzup,
    /// `POST /api/presence`
    Presence,
}

impl Route {
    /// The route named by the folder the file is in.
    pub fn of(file: &Path) -> anyhow::Result<Route> {
        let folder = file
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        Ok(match folder {
            "amocrm" => Route::Amocrm,
            "bitrix24" => Route::Bitrix24,
            "wazzup" => Route::Wazzup,
            "presence" => Route::Presence,
            other => bail!(
                "{}: the folder `{other}` names no route; put the body under amocrm/, bitrix24/, wazzup/ or presence/",
                file.display()
            ),
        })
    }

    fn content_type(self) -> &'static str {
        match self {
            Route::Amocrm | Route::Bitrix24 => "application/x-www-form-urlencoded",
            Route::Wazzup | Route::Presence => "application/json",
        }
    }
}

/// What a body parses into, as `--dry-run` prints it.
pub fn dry_run(route: Route, body: &[u8]) -> Result<Parsed, String> {
    match route {
        Route::Amocrm => amocrm::webhook::parse(body).map_err(|e| e.to_string()),
        Route::Bitrix24 => bitrix24::webhook::parse(body).map_err(|e| e.to_string()),
        Route::Wazzup => wazzup::webhook::parse(body, &[]).map_err(|e| e.to_string()),
        Route::Presence => parse_presence(body).map(|(_, event)| Parsed {
            events: vec![event],
            ..Parsed::default()
        }),
    }
}

/// Runs `replay`.
pub async fn run(config_dir: &Path, args: ReplayArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    if args.dry_run {
        for file in &args.files {
            let route = Route::of(file)?;
            let body =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            match dry_run(route, &body) {
                Ok(parsed) => {
                    for event in &parsed.events {
                        println!("{}", serde_json::to_string(event)?);
                    }
                    for name in &parsed.ignored {
                        eprintln!(
                            "{}: `{name}` is not handled by the robot (it would be accepted and counted)",
                            file.display()
                        );
                    }
                    if parsed.is_check {
                        eprintln!(
                            "{}: a health check of the sender (answered 200, nothing enqueued)",
                            file.display()
                        );
                    }
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("{}: would be refused with 400: {e}", file.display());
                }
            }
        }
    } else {
        let secrets = context::secrets_for_replay(config_dir)?;
        let client = reqwest::Client::new();
        let base = args.to.trim_end_matches('/');
        for file in &args.files {
            let route = Route::of(file)?;
            let body =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let mut request = match route {
                Route::Amocrm => client.post(format!(
                    "{base}/hooks/amocrm/{}",
                    secrets.hook.expose_secret()
                )),
                Route::Bitrix24 => client.post(format!(
                    "{base}/hooks/bitrix24/{}",
                    secrets.hook.expose_secret()
                )),
                Route::Wazzup => client.post(format!(
                    "{base}/hooks/wazzup/{}",
                    secrets.hook.expose_secret()
                )),
                Route::Presence => client.post(format!("{base}/api/presence")),
            };
            if route == Route::Presence {
                request = request.bearer_auth(secrets.presence.expose_secret());
            }
            let response = request
                .header(reqwest::header::CONTENT_TYPE, route.content_type())
                .body(body)
                .send()
                .await
                .with_context(|| format!("cannot reach the robot at {base}"))?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if !status.is_success() {
                failed += 1;
            }
            println!("{} -> {} {}", file.display(), status.as_u16(), text);
        }
    }
    if failed > 0 {
        bail!("{failed} of {} bodies were refused", args.files.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_names_the_route() {
        assert_eq!(
            Route::of(Path::new("fixtures/amocrm/a.form")).unwrap(),
            Route::Amocrm
        );
        assert_eq!(
            Route::of(Path::new("x/presence/a.json")).unwrap(),
            Route::Presence
        );
        let err = Route::of(Path::new("fixtures/bad/a.form"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no route"), "{err}");
    }
}
