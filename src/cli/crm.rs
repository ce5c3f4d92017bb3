//! `sales-robot crm lead ID | crm check` and `sales-robot auth amocrm --code CODE`: what
//! support staff use to see the CRM as the robot sees it, and to connect it.

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};

use crate::cli::context::{self, ConnectedCrm};

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
}

async fn connect(config_dir: &Path) -> anyhow::Result<ConnectedCrm> {
    let ctx = context::load(config_dir)?;
    let store = ctx.open_store().await?;
    ctx.crm(&store)?
        .map_err(|why| anyhow!("the CRM is not connected: {why}"))
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
    }
    Ok(())
}
