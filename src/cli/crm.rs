//! `sales-robot crm lead ID | crm check`, `sales-robot auth amocrm --code CODE` and
//! `sales-robot auth bitrix24 --access-token A --refresh-token R`: what support staff use to
//! see the CRM as the robot sees it, and to connect it.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::cli::context::{self, ConnectedCrm};
use crate::config::CrmKind;

/// What to look at in the CRM.
#[derive(Debug, clap::Subcommand)]
pub enum CrmAction {
    /// Print a lead as the robot sees it: our field names, its contacts and company.
    Lead {
        /// The lead's (deal's) id in the CRM.
        id: String,
    },
    /// Check the credentials, the field mapping, and that the account has stages and loss
    /// reasons; say what is missing.
    Check,
}

/// Which CRM to authorise.
#[derive(Debug, clap::Subcommand)]
pub enum AuthAction {
    /// Exchange the authorization code of an amoCRM OAuth integration for tokens, kept in
    /// the store (they are refreshed from then on).
    Amocrm {
        /// The code from the integration's redirect.
        #[arg(long)]
        code: String,
    },
    /// Keep the token pair a Bitrix24 portal gave the local application when it was installed
    /// (the install event or the install page); the robot refreshes it from then on.
    Bitrix24 {
        /// The `access_token` (`AUTH_ID` on the install page).
        #[arg(long)]
        access_token: String,
        /// The `refresh_token` (`REFRESH_ID` on the install page).
        #[arg(long)]
        refresh_token: String,
    },
}

async fn connect(config_dir: &Path) -> anyhow::Result<ConnectedCrm> {
    let ctx = context::load(config_dir)?;
    let store = ctx.open_store().await?;
    ctx.connected(&store)
}

/// Runs `crm`.
pub async fn run(config_dir: &Path, action: CrmAction) -> anyhow::Result<()> {
    let connected = connect(config_dir).await?;
    match action {
        CrmAction::Lead { id } => match connected.crm.lead(&id).await? {
            Some(lead) => println!("{}", serde_json::to_string_pretty(&lead)?),
            None => bail!("there is no lead {id} in {}", connected.description),
        },
        CrmAction::Check => {
            println!("{}", connected.description);
            let mut problems = 0;
            let managers = connected
                .crm
                .managers()
                .await
                .context("the credentials do not work")?;
            println!(
                "ok: credentials work ({} users, {} active)",
                managers.len(),
                managers.iter().filter(|m| m.active).count()
            );
            let stages = connected.crm.stages().await?;
            println!("ok: {} stages", stages.len());
            let reasons = connected.crm.loss_reasons().await?;
            println!("ok: {} loss reasons", reasons.len());
            for missing in connected.client.missing_fields().await? {
                problems += 1;
                println!("missing: {missing}");
            }
            if problems > 0 {
                bail!(
                    "{problems} problem(s): fix [fields.*] in robot.toml or add the fields in the CRM"
                );
            }
            println!("ok: every mapped field exists");
        }
    }
    Ok(())
}

/// Runs `auth`.
pub async fn auth(config_dir: &Path, action: AuthAction) -> anyhow::Result<()> {
    match action {
        AuthAction::Amocrm { code } => {
            let connected = connect(config_dir).await?;
            let context::Client::Amocrm(amo) = connected.client else {
                bail!("crm.kind is not amocrm");
            };
            amo.tokens().exchange_code(&code).await?;
            println!("amoCRM tokens are kept in the store; the robot refreshes them from now on");
        }
        AuthAction::Bitrix24 {
            access_token,
            refresh_token,
        } => {
            if access_token.trim().is_empty() || refresh_token.trim().is_empty() {
                bail!("both tokens are needed, and neither may be empty");
            }
            let ctx = context::load(config_dir)?;
            let kind = ctx.config.crm.kind;
            if kind != CrmKind::Bitrix24 {
                bail!(
                    "crm.kind is `{kind}`: `auth bitrix24` connects a Bitrix24 local application \
                     (set crm.kind = \"bitrix24\")"
                );
            }
            let store = ctx.open_store().await?;
            let connected = ctx.connected(&store)?;
            let context::Client::Bitrix24(b24) = connected.client else {
                bail!("crm.kind is not bitrix24");
            };
            let Some(tokens) = b24.tokens() else {
                bail!(
                    "{} connects through the inbound webhook, which needs no tokens: unset {} \
                     to use the local application (bitrix24.client_id and {})",
                    connected.description,
                    crate::config::BITRIX24_WEBHOOK_VAR,
                    crate::config::BITRIX24_CLIENT_SECRET_VAR
                );
            };
            // The tokens are never echoed: whoever reads the terminal or the log must not get
            // the portal's keys.
            tokens
                .set(access_token.trim(), refresh_token.trim())
                .await?;
            println!("Bitrix24 tokens are kept in the store; the robot refreshes them from now on");
        }
    }
    Ok(())
}
