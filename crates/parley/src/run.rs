//! `parley run`: one cluster node with the roles it is given.

use std::process::ExitCode;

use anyhow::Context;
use parley_core::app::AppConfig;
use parley_core::app::AppDirectory;
use parley_core::app::MultiLogin;
use parley_core::ids::AppId;
use parley_core::ids::NodeId;
use parley_edge::EdgeConfig;
use parley_owner::OwnerConfig;
use tokio::net::TcpListener;

use crate::cli::RunOptions;
use crate::cluster::Member;

/// Reads `ID=ROLES@HOST:PORT,…`.
pub fn parse_members(raw: &str) -> anyhow::Result<Vec<Member>> {
    let mut members = Vec::new();
    for entry in raw
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (id, rest) = entry
            .split_once('=')
            .with_context(|| format!("member {entry:?}: expected ID=ROLES@HOST:PORT"))?;
        let (roles, address) = rest
            .split_once('@')
            .with_context(|| format!("member {entry:?}: expected ID=ROLES@HOST:PORT"))?;
        let node = NodeId(
            id.parse()
                .with_context(|| format!("member {entry:?}: the id is not a number"))?,
        );
        let mut member = Member {
            node,
            grpc_address: address.to_owned(),
            edge: false,
            owner: false,
        };
        for role in roles.split('+') {
            match role {
                "edge" => member.edge = true,
                "owner" => member.owner = true,
                other => anyhow::bail!("member {entry:?}: unknown role {other:?}"),
            }
        }
        if members.iter().any(|known: &Member| known.node == node) {
            anyhow::bail!("node {} appears twice in --members", node.0);
        }
        members.push(member);
    }
    if !members.iter().any(|member| member.owner) {
        anyhow::bail!("--members names no owner");
    }
    Ok(members)
}

pub async fn run(options: RunOptions) -> anyhow::Result<ExitCode> {
    let members = parse_members(&options.members)?;
    let me = NodeId(options.node_id);
    let this = members
        .iter()
        .find(|member| member.node == me)
        .with_context(|| format!("--node-id {} is not in --members", me.0))?;
    let edge = options.roles.iter().any(|role| role == "edge");
    let owner = options.roles.iter().any(|role| role == "owner");
    if let Some(unknown) = options
        .roles
        .iter()
        .find(|role| !matches!(role.as_str(), "edge" | "owner"))
    {
        anyhow::bail!("--roles: unknown role {unknown:?} (edge, owner)");
    }
    if (edge, owner) != (this.edge, this.owner) {
        anyhow::bail!("--roles does not match this node's roles in --members");
    }
    let owners = members.iter().filter(|member| member.owner).count();
    if options.store == "embedded" && owners > 1 {
        anyhow::bail!("with more than one owner, --store must be redis://… or redis-cluster://…");
    }

    let app_id =
        AppId::parse(&options.app_id).map_err(|error| anyhow::anyhow!("--app-id: {error}"))?;
    let mut app = AppConfig::new(app_id, options.app_certificate.clone());
    if options.allow_multi_login {
        app.multi_login = MultiLogin::AllowMany;
    }
    let store = crate::dev::open_store(&options.store, &options.data_dir).await?;
    let node = crate::cluster::node(
        me,
        &members,
        AppDirectory::new([app]),
        OwnerConfig::default(),
        EdgeConfig::default(),
        store,
    )
    .await?;
    let grpc_addr = match options.grpc_addr {
        Some(addr) => addr,
        None => this
            .grpc_address
            .parse()
            .with_context(|| format!("this node's address {:?}", this.grpc_address))?,
    };
    let grpc = TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("bind {grpc_addr}"))?;
    let http = if edge {
        let listener = TcpListener::bind(options.http_addr)
            .await
            .with_context(|| format!("bind {}", options.http_addr))?;
        let addr = listener.local_addr()?;
        let _ = std::io::Write::write_all(
            &mut std::io::stdout(),
            format!(
                "parley node {} (edge) is listening on ws://{addr}/v1/ws\n",
                me.0
            )
            .as_bytes(),
        );
        Some(listener)
    } else {
        None
    };
    tracing::info!(node = me.0, edge, owner, "node started");
    crate::cluster::serve(node, grpc, http, crate::dev::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_bad_ones_are_named() {
        let members = parse_members("1=owner@127.0.0.1:7101, 2=edge+owner@127.0.0.1:7102").unwrap();
        assert_eq!(members.len(), 2);
        assert!(members[0].owner && !members[0].edge);
        assert!(members[1].owner && members[1].edge);
        assert_eq!(members[1].grpc_address, "127.0.0.1:7102");
        for bad in [
            "1=owner",
            "x=owner@h:1",
            "1=cook@h:1",
            "1=owner@h:1,1=edge@h:2",
            "1=edge@h:1",
        ] {
            assert!(parse_members(bad).is_err(), "{bad}");
        }
    }
}
