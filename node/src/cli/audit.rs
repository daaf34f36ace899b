//! `slurp audit`: the node's audit log, its last entries and a check of
//! its hash chain against the heads other members hold.

use std::time::Duration;

use anyhow::Result;
use slurp_protocol::api::AuditTailResponse;

use super::output::{client, print};
use crate::{AuditCommand, invalid};

/// One line per audit entry: seq, UTC time, decision, actor and role,
/// action, target, and the reason of a denial.
fn show_audit_tail(v: &AuditTailResponse) -> String {
    let mut lines: Vec<String> = v
        .entries
        .iter()
        .map(|e| {
            let time = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_millis(e.time_ms),
            )
            .to_string();
            let mut line = format!(
                "{:>6} {} {:<5} {} ({}) {} {}",
                e.seq,
                time,
                e.decision.as_str(),
                e.actor,
                e.role.as_ref().map_or("-", |r| r.as_str()),
                e.action,
                e.target
            );
            if !e.reason.is_empty() {
                line.push_str(&format!(": {}", e.reason));
            }
            line
        })
        .collect();
    if let Some(err) = &v.error {
        lines.push(format!("(the log is broken after this: {err})"));
    }
    lines.join("\n")
}

/// Runs one `slurp audit` command.
pub async fn run(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Tail { limit, c } => {
            let v = client(&c)?.audit_tail(limit).await?;
            print(&c, &v, show_audit_tail)
        }
        AuditCommand::Verify { c } => {
            let v = client(&c)?.audit_verify().await?;
            print(&c, &v, |v| {
                if v.ok {
                    format!(
                        "audit log ok: {} entries, head {}; checked against the heads {} other members hold",
                        v.entries,
                        v.head.as_deref().unwrap_or(""),
                        v.anchors.len()
                    )
                } else {
                    String::new()
                }
            })?;
            if !v.ok {
                let mut why = v.error.clone();
                for a in v.anchors.iter().filter(|a| !a.ok) {
                    why.get_or_insert_with(|| {
                        format!(
                            "member {} holds head {} of this log: {}",
                            a.member,
                            a.head.as_deref().unwrap_or("?"),
                            a.error.as_deref().unwrap_or("unknown error")
                        )
                    });
                }
                return Err(invalid(format!(
                    "the audit log is broken: {}",
                    why.unwrap_or_else(|| "unknown error".into())
                )));
            }
            Ok(())
        }
    }
}
