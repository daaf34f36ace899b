//! `slurp keys`: the role keys a node knows, their rotation and the
//! rewrap of stored records onto new epochs.

use anyhow::Result;
use slurp_protocol::RoleName;
use slurp_protocol::api::RotateKeyRequest;

use super::output::{client, or_null, print};
use crate::{KeysCommand, usage};

/// Runs one `slurp keys` command.
pub async fn run(cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::List { c } => {
            let v = client(&c)?.keys().await?;
            print(&c, &v, |v| {
                v.keys
                    .iter()
                    .map(|k| {
                        format!(
                            "{:<12} epoch {:<3} {}  {}{}",
                            k.role,
                            k.epoch,
                            k.fingerprint,
                            if k.held { "held" } else { "public only" },
                            if k.current { ", current" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        KeysCommand::Rotate { role, c } => {
            let role = RoleName::new(role.as_str())
                .map_err(|e| usage(&["keys", "rotate"], format!("--role {role}: {e}")))?;
            let v = client(&c)?.rotate_key(&RotateKeyRequest { role }).await?;
            print(&c, &v, |v| {
                format!(
                    "role {} now at epoch {} (key {}); new records are sealed to it, stored ones move in the background (slurp keys status)",
                    v.role.as_str(),
                    v.epoch,
                    v.fingerprint
                )
            })
        }
        KeysCommand::Status { c } => {
            let v = client(&c)?.key_status().await?;
            print(&c, &v, |v| {
                let mut out = format!(
                    "key directory v{}{}",
                    v.directory_version,
                    if v.keys_held {
                        ""
                    } else {
                        " (granted keys still arriving)"
                    }
                );
                for r in &v.roles {
                    out.push_str(&format!(
                        "\n{:<12} epoch {} {}  held here: {}",
                        r.role.as_str(),
                        or_null(r.current_epoch),
                        r.current_fingerprint.as_deref().unwrap_or("-"),
                        serde_json::to_string(&r.held_epochs).unwrap_or_default()
                    ));
                }
                out.push_str(&format!(
                    "\nrewrap: {} stored versions left on old epochs; last pass: {}",
                    v.rewrap.pending,
                    v.rewrap
                        .worker
                        .as_ref()
                        .map_or("none yet", |w| w.last_note.as_str())
                ));
                out
            })
        }
    }
}
