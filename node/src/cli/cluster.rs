//! `slurp cluster`: membership, invites, grants, layout changes and where
//! an address is placed.

use anyhow::Result;
use slurp_protocol::api::{
    ApplyResponse, ClusterStatusResponse, GrantRequest, InviteRequest, JoinRequest, RemoveRequest,
};
use slurp_protocol::{RoleName, UcxlAddress};

use super::output::{client, or_null, print};
use crate::{ClientArgs, ClusterCommand, WaitArgs, usage};
use slurp_node::client::Client;

/// Runs one `slurp cluster` command.
pub async fn run(cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Status { c } => {
            let v = client(&c)?.cluster_status().await?;
            print(&c, &v, cluster_text)?;
        }
        ClusterCommand::Init { c } => {
            let v = client(&c)?.cluster_init().await?;
            print(&c, &v, |v| {
                format!(
                    "cluster {} created: layout version {} with this node; add nodes with `slurp cluster invite`",
                    v.cluster.as_deref().unwrap_or(""),
                    v.layout_version
                )
            })?;
        }
        ClusterCommand::Invite { roles, ttl, c } => {
            if let Some(t) = &ttl {
                humantime::parse_duration(t)
                    .map_err(|e| usage(&["cluster", "invite"], format!("--ttl {t}: {e}")))?;
            }
            let roles = if roles.is_empty() {
                None
            } else {
                Some(
                    roles
                        .iter()
                        .map(|r| RoleName::new(r.as_str()))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            };
            let v = client(&c)?
                .cluster_invite(&InviteRequest { roles, ttl })
                .await?;
            print(&c, &v, |v| v.token.clone())?;
        }
        ClusterCommand::Invites { c } => {
            let v = client(&c)?.cluster_invites().await?;
            print(&c, &v, |v| {
                let mut out = String::new();
                for i in &v.invites {
                    let state = match &i.used_by {
                        Some(p) => format!("used by {p}"),
                        None => format!(
                            "open until {}",
                            slurp_node::tokens::time_text(i.not_after_ms)
                        ),
                    };
                    let roles: Vec<&str> = i.roles.iter().map(RoleName::as_str).collect();
                    out.push_str(&format!("{}  roles {}  {state}\n", i.id, roles.join(",")));
                }
                if out.is_empty() {
                    out = "no invites".into();
                }
                out.trim_end().to_string()
            })?;
        }
        ClusterCommand::Join {
            peer,
            zone,
            capacity,
            apply,
            wait,
            c,
        } => {
            let client = client(&c)?;
            let v = client
                .cluster_join(&JoinRequest {
                    peer,
                    zone,
                    capacity,
                })
                .await?;
            if apply {
                apply_and_wait(&client, &c, &wait).await?;
            } else {
                print(&c, &v, |v| {
                    format!(
                        "staged {} (zone {}, capacity {}); run `slurp cluster apply` to publish",
                        v.staged.id, v.staged.zone, v.staged.capacity
                    )
                })?;
            }
        }
        ClusterCommand::Grant { peer, roles, c } => {
            let roles = roles
                .iter()
                .filter(|r| !r.is_empty())
                .map(|r| RoleName::new(r.as_str()))
                .collect::<Result<Vec<_>, _>>()?;
            let v = client(&c)?
                .cluster_grant(&GrantRequest { peer, roles })
                .await?;
            print(&c, &v, |v| {
                let roles: Vec<&str> = v.roles.iter().map(RoleName::as_str).collect();
                format!(
                    "certified {} for roles [{}]; its older certificates are void{}",
                    v.peer,
                    roles.join(","),
                    if v.delivered {
                        ""
                    } else {
                        "\nthe peer did not take the certificate (unreachable?): every member refuses it until it gets one"
                    }
                )
            })?;
        }
        ClusterCommand::Remove {
            peer,
            apply,
            wait,
            c,
        } => {
            let client = client(&c)?;
            let v = client
                .cluster_remove(&RemoveRequest { peer: peer.clone() })
                .await?;
            if apply {
                apply_and_wait(&client, &c, &wait).await?;
            } else {
                print(&c, &v, |_| {
                    format!("staged the removal of {peer}; run `slurp cluster apply` to publish")
                })?;
            }
        }
        ClusterCommand::Where { address, c } => {
            UcxlAddress::parse(&address)?;
            let v = client(&c)?.cluster_placement(&address).await?;
            print(&c, &v, |v| {
                let mut out = format!(
                    "partition {} (layout v{}), replicas:",
                    v.partition, v.layout_version
                );
                for r in &v.replicas {
                    out.push_str(&format!(
                        "\n  {} {} {}",
                        if r.up { "up  " } else { "DOWN" },
                        r.name.as_deref().unwrap_or("?"),
                        r.id
                    ));
                }
                out
            })?;
        }
        ClusterCommand::Apply { wait, c } => {
            apply_and_wait(&client(&c)?, &c, &wait).await?;
        }
    }
    Ok(())
}

/// Publishes the staged changes; with `--wait`, follows the layout
/// transition until it is over, a line on stderr whenever it moves on.
async fn apply_and_wait(client: &Client, c: &ClientArgs, wait: &WaitArgs) -> Result<()> {
    let v = client.cluster_apply().await?;
    print(c, &v, applied_text)?;
    if !wait.wait {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + wait.wait_timeout;
    let mut last = String::new();
    loop {
        let s = client.cluster_status().await?;
        let Some(t) = &s.transition else {
            progress(&format!(
                "layout v{}: every moved partition is with its new owners",
                s.layout_version
            ));
            return Ok(());
        };
        let line = transition_text(t);
        if line != last {
            progress(&line);
            last = line;
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the layout transition was not over within {}: {last}",
                humantime::format_duration(wait.wait_timeout)
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// A progress line on stderr (a closed stderr is not an error).
fn progress(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// One line on a layout transition.
fn transition_text(t: &slurp_protocol::api::TransitionStatus) -> String {
    let versions: Vec<String> = t.active.iter().map(|v| format!("v{v}")).collect();
    let mut out = format!(
        "transition {}: {}; pulled {}/{} partitions, {:.1} MB ({:.1} MB/s){}",
        versions.join(" -> "),
        t.phase,
        t.partitions_done,
        t.partitions_total,
        t.bytes as f64 / 1e6,
        t.bytes_per_sec / 1e6,
        match t.eta_secs {
            Some(s) if t.partitions_done < t.partitions_total => format!(", about {s}s left"),
            _ => String::new(),
        }
    );
    if !t.waiting_for.is_empty() {
        out.push_str(&format!("; waiting for {}", t.waiting_for.join(", ")));
    }
    out
}

fn applied_text(v: &ApplyResponse) -> String {
    format!(
        "layout version {} published: {} members, replication factor {}, {} partitions, {} replicas move",
        v.version,
        v.members.len(),
        v.replication_factor,
        v.partitions,
        v.moved_replicas
    )
}

/// `slurp cluster status` as text.
fn cluster_text(v: &ClusterStatusResponse) -> String {
    let mut out = format!(
        "node {} ({})\ncluster {}\nlayout version {}{}",
        v.name,
        v.peer_id,
        match &v.cluster {
            Some(id) if v.key_holder => format!("{id} (this node holds the cluster key)"),
            Some(id) => id.clone(),
            None => "none yet (slurp cluster init, or start with --join-token)".into(),
        },
        v.layout_version,
        match v.replication_factor {
            Some(rf) => format!(
                ", replication factor {rf}, {} partitions, W {} R {}",
                or_null(v.partitions),
                v.write_quorum,
                v.read_quorum
            ),
            None => " (no layout yet)".into(),
        }
    );
    out.push_str(&format!("\nmembers ({}):", v.members.len()));
    for m in &v.members {
        out.push_str(&format!(
            "\n  {} {:<10} zone {:<8} {} partitions  layout v{}  {}{}",
            if m.peer.up { "up  " } else { "DOWN" },
            m.peer.name.as_deref().unwrap_or("?"),
            m.peer.zone.as_deref().unwrap_or(""),
            m.partitions,
            m.peer.layout_version,
            m.id,
            if m.is_self { "  (this node)" } else { "" },
        ));
    }
    if !v.others.is_empty() {
        out.push_str("\nother peers (not members):");
        for p in &v.others {
            out.push_str(&format!(
                "\n  {} {} {}",
                if p.up { "up  " } else { "DOWN" },
                p.name.as_deref().unwrap_or("?"),
                p.peer_id
            ));
        }
    }
    if let Some(e) = &v.join_error {
        out.push_str(&format!("\njoining failed: {e}"));
    }
    let ae = &v.anti_entropy;
    if ae.partitions > 0 {
        out.push_str(&format!(
            "\nanti-entropy: {} of {} partitions converged, {} differing, {} not compared yet{}",
            ae.converged,
            ae.partitions,
            ae.differing,
            ae.unknown,
            match ae.oldest_converged_ms {
                Some(ms) => format!("; oldest convergence {}", slurp_node::tokens::time_text(ms)),
                None => String::new(),
            }
        ));
    }
    if let Some(t) = &v.transition {
        out.push('\n');
        out.push_str(&transition_text(t));
    }
    let joins = v.staged.join.len();
    let removes = v.staged.remove.len();
    if joins + removes > 0 {
        out.push_str(&format!(
            "\nstaged: {joins} to join, {removes} to remove (slurp cluster apply)"
        ));
    }
    out
}
