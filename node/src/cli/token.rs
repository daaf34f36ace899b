//! `slurp token`: API tokens, created (shown once), revoked and listed.

use anyhow::Result;
use slurp_protocol::api::{CreateTokenRequest, TimeArg, TokenView};

use super::output::{client, print};
use crate::TokenCommand;

/// The limits of a token in `token list`: `  from NET, NET  valid FROM to
/// TO`, or nothing for a token without limits.
fn token_limits_text(t: &TokenView) -> String {
    let mut out = String::new();
    if !t.allow_from.is_empty() {
        out.push_str(&format!("  from {}", t.allow_from.join(", ")));
    }
    let time = |ms: Option<u64>| ms.map(slurp_node::tokens::time_text);
    match (time(t.not_before_ms), time(t.not_after_ms)) {
        (None, None) => {}
        (Some(b), None) => out.push_str(&format!("  valid from {b}")),
        (None, Some(a)) => out.push_str(&format!("  valid until {a}")),
        (Some(b), Some(a)) => out.push_str(&format!("  valid {b} to {a}")),
    }
    out
}

/// Runs one `slurp token` command.
pub async fn run(cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create {
            role,
            label,
            allow_from,
            valid_for,
            not_before,
            not_after,
            c,
        } => {
            let req = CreateTokenRequest {
                role,
                label,
                allow_from,
                not_before: not_before.map(TimeArg::Text),
                not_after: not_after.map(TimeArg::Text),
                valid_for,
            };
            let v = client(&c)?.create_token(&req).await?;
            print(&c, &v, |v| v.token.clone())
        }
        TokenCommand::Revoke { id, c } => {
            let v = client(&c)?.revoke_token(&id).await?;
            print(&c, &v, |v| format!("revoked {}", v.id))
        }
        TokenCommand::List { c } => {
            let v = client(&c)?.tokens().await?;
            print(&c, &v, |v| {
                v.tokens
                    .iter()
                    .map(|t| {
                        format!(
                            "{}  {:<10} {}{}{}",
                            t.id,
                            t.role.as_str(),
                            t.label,
                            token_limits_text(t),
                            if t.revoked_at_ms.is_none() {
                                ""
                            } else {
                                "  (revoked)"
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}
