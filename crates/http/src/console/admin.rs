//! The administrator's pages: peers and their reachability, keys and their expiry, the node's health.
//!
//! `GET /console/admin` shows the node's health, its peers and its keys to an administrator
//! (the health use case admits administrators only); `GET /console/admin/keys` shows the keys
//! alone, to whoever may read them (administrators and auditors). Each page renders the
//! answers of the use cases it calls, and a use case's refusal is the page's refusal.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use kinbridge_core::UnixMillis;
use kinbridge_core::firewall::LocalAccess;
use kinbridge_proto::v1 as pb;
use kinbridge_service::admin::{KEY_EXPIRY_WARNING_MS, NodeHealth};

use super::catalogue::Catalogue;
use super::html::{self, esc, facts, when};
use super::{Console, Visit};

/// A day in milliseconds.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/admin", get(admin))
        .route("/console/admin/keys", get(keys))
}

/// `GET /console/admin`: the node's health, its peers and its keys.
async fn admin(visit: Visit) -> Response {
    let method = "GET /console/admin";
    visit
        .serve(method, LocalAccess::Operations, move |v| async move {
            let Visit {
                console,
                auth,
                page,
                ..
            } = v;
            let health = match console.admin.health(auth.as_ref()).await {
                Ok(health) => health,
                Err(error) => return page.refused(&error),
            };
            let peers = match console
                .admin
                .list_peers(auth.as_ref(), pb::ListPeersRequest {})
                .await
            {
                Ok(peers) => peers.peers,
                Err(error) => return page.refused(&error),
            };
            let keys = match console
                .admin
                .list_keys(auth.as_ref(), pb::ListKeysRequest {})
                .await
            {
                Ok(keys) => keys,
                Err(error) => return page.refused(&error),
            };
            let now = UnixMillis::now().0;
            let cat = page.cat;
            let body = format!(
                "{}{}{}",
                health_section(cat, &health),
                peers_section(cat, &peers),
                keys_section(cat, &keys, now)
            );
            page.answer(StatusCode::OK, cat.text("admin.title"), &body)
        })
        .await
}

/// `GET /console/admin/keys`: this node's keys and its peers' keys.
async fn keys(visit: Visit) -> Response {
    let method = "GET /console/admin/keys";
    visit
        .serve(method, LocalAccess::Operations, move |v| async move {
            let Visit {
                console,
                auth,
                page,
                ..
            } = v;
            match console
                .admin
                .list_keys(auth.as_ref(), pb::ListKeysRequest {})
                .await
            {
                Ok(keys) => {
                    let body = keys_section(page.cat, &keys, UnixMillis::now().0);
                    page.answer(StatusCode::OK, page.cat.text("admin.keys.title"), &body)
                }
                Err(error) => page.refused(&error),
            }
        })
        .await
}

/// The node's health as facts.
fn health_section(cat: &Catalogue, health: &NodeHealth) -> String {
    let store = if health.store_ok {
        esc(cat.text("admin.health.store-ok"))
    } else {
        format!(
            "<strong class=\"warning\">{}</strong>",
            esc(cat.text("admin.health.store-failing"))
        )
    };
    format!(
        "<section aria-labelledby=\"health\"><h2 id=\"health\">{}</h2>\n{}</section>\n",
        esc(cat.text("admin.health")),
        facts(&[
            (cat.text("admin.health.node"), esc(&health.node_id)),
            (cat.text("admin.health.tags"), html::list(&health.tags)),
            (cat.text("admin.health.units"), html::list(&health.units)),
            (
                cat.text("admin.health.backlog"),
                esc(&html::number(cat, health.delivery_backlog))
            ),
            (
                cat.text("admin.health.audit-size"),
                esc(&html::number(cat, health.audit_log_size))
            ),
            (
                cat.text("admin.health.active-key"),
                format!("<code>{}</code>", esc(&health.active_key_id))
            ),
            (
                cat.text("admin.health.peers"),
                esc(&html::number(cat, health.peers))
            ),
            (cat.text("admin.health.store"), store),
        ])
    )
}

/// Where delivery to a peer stands: nothing waiting, waiting, or failing since the oldest
/// waiting message was submitted.
fn reachability(cat: &Catalogue, peer: &pb::PeerInfo) -> String {
    if peer.endpoint.is_empty() {
        esc(cat.text("admin.peer.sends-only"))
    } else if peer.queued == 0 {
        esc(cat.text("admin.peer.reachable"))
    } else if peer.last_error.is_empty() {
        esc(&cat.fill(
            "admin.peer.waiting",
            &[("since", &when(cat, peer.oldest_queued_at_ms))],
        ))
    } else {
        format!(
            "<strong class=\"warning\">{}</strong><br><small>{}: <code>{}</code></small>",
            esc(&cat.fill(
                "admin.peer.unreachable",
                &[("since", &when(cat, peer.oldest_queued_at_ms))],
            )),
            esc(cat.text("admin.peer.last-error")),
            esc(&peer.last_error)
        )
    }
}

/// The peers' table.
fn peers_section(cat: &Catalogue, peers: &[pb::PeerInfo]) -> String {
    let mut out = format!(
        "<section aria-labelledby=\"peers\"><h2 id=\"peers\">{}</h2>\n",
        esc(cat.text("admin.peers"))
    );
    if peers.is_empty() {
        let _ = writeln!(
            out,
            "<p>{}</p></section>",
            esc(cat.text("admin.peers.none"))
        );
        return out;
    }
    let _ = writeln!(
        out,
        "<table>\n<thead><tr>{}</tr></thead>\n<tbody>",
        [
            "admin.peer.node",
            "admin.peer.endpoint",
            "admin.peer.tags",
            "admin.peer.queued",
            "admin.peer.state",
            "admin.peer.checkpoint",
        ]
        .iter()
        .map(|k| format!("<th scope=\"col\">{}</th>", esc(cat.text(k))))
        .collect::<String>()
    );
    for peer in peers {
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&peer.node_id),
            if peer.endpoint.is_empty() {
                String::new()
            } else {
                format!("<code>{}</code>", esc(&peer.endpoint))
            },
            html::list(&peer.tags),
            esc(&html::number(cat, peer.queued)),
            reachability(cat, peer),
            if peer.held_checkpoint_size == 0 {
                esc(cat.text("admin.peer.no-checkpoint"))
            } else {
                esc(&cat.fill(
                    "admin.peer.checkpoint-size",
                    &[("size", &html::number(cat, peer.held_checkpoint_size))],
                ))
            },
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
    out
}

/// Where a key stands at `now`, and a warning if it expires within
/// [`KEY_EXPIRY_WARNING_MS`].
fn key_state(cat: &Catalogue, key: &pb::KeyInfo, now: i64) -> String {
    if key.revoked_at_ms > 0 && key.revoked_at_ms <= now {
        return format!(
            "<strong class=\"warning\">{}</strong>",
            esc(&cat.fill(
                "admin.key.revoked",
                &[
                    ("when", &when(cat, key.revoked_at_ms)),
                    ("reason", &key.revocation_reason)
                ]
            ))
        );
    }
    if key.not_before_ms > now {
        return esc(cat.text("admin.key.not-yet"));
    }
    if key.not_after_ms > 0 && key.not_after_ms <= now {
        return format!(
            "<strong class=\"warning\">{}</strong>",
            esc(cat.text("admin.key.expired"))
        );
    }
    let mut out = esc(cat.text(if key.active {
        "admin.key.active"
    } else {
        "admin.key.valid"
    }));
    if key.not_after_ms > 0 {
        let days = (key.not_after_ms - now) / DAY_MS;
        let left = cat.fill(
            "admin.key.expires-in",
            &[("days", &html::number(cat, u64::try_from(days).unwrap_or(0)))],
        );
        if key.not_after_ms - now < KEY_EXPIRY_WARNING_MS {
            let _ = write!(
                out,
                "<br><strong class=\"warning\">{}</strong>",
                esc(&format!("{left} {}", cat.text("admin.key.renew")))
            );
        } else {
            let _ = write!(out, "<br>{}", esc(&left));
        }
    }
    out
}

/// One table of keys (`with_node`: a column naming each key's node).
fn keys_table(cat: &Catalogue, keys: &[pb::KeyInfo], now: i64, with_node: bool) -> String {
    if keys.is_empty() {
        return format!("<p>{}</p>\n", esc(cat.text("admin.keys.none")));
    }
    let mut heads = Vec::new();
    if with_node {
        heads.push("admin.peer.node");
    }
    heads.extend([
        "admin.key.id",
        "admin.key.fingerprint",
        "admin.key.not-before",
        "admin.key.not-after",
        "admin.key.state",
    ]);
    let mut out = format!(
        "<table>\n<thead><tr>{}</tr></thead>\n<tbody>\n",
        heads
            .iter()
            .map(|k| format!("<th scope=\"col\">{}</th>", esc(cat.text(k))))
            .collect::<String>()
    );
    for key in keys {
        out.push_str("<tr>");
        if with_node {
            let _ = write!(out, "<td>{}</td>", esc(&key.node_id));
        }
        let bound = |ms: i64| {
            if ms > 0 {
                esc(&when(cat, ms))
            } else {
                esc(cat.text("admin.key.no-bound"))
            }
        };
        let _ = writeln!(
            out,
            "<th scope=\"row\"><code>{}</code></th><td><code class=\"fingerprint\">{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&key.key_id),
            esc(&key.fingerprint),
            bound(key.not_before_ms),
            bound(key.not_after_ms),
            key_state(cat, key, now),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// This node's keys and its peers' keys.
fn keys_section(cat: &Catalogue, keys: &pb::ListKeysResponse, now: i64) -> String {
    format!(
        "<section aria-labelledby=\"keys\"><h2 id=\"keys\">{}</h2>\n<h3>{}</h3>\n{}<h3>{}</h3>\n{}</section>\n",
        esc(cat.text("admin.keys")),
        esc(cat.text("admin.keys.own")),
        keys_table(cat, &keys.own, now, false),
        esc(cat.text("admin.keys.peers")),
        keys_table(cat, &keys.peers, now, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::catalogue;

    #[test]
    fn a_peer_is_reachable_waiting_or_unreachable_since_its_oldest_message() {
        let en = catalogue::english();
        let mut peer = pb::PeerInfo {
            node_id: "ZM-DSW".into(),
            ..Default::default()
        };
        assert_eq!(reachability(en, &peer), "Only sends to this node");
        peer.endpoint = "https://127.0.0.1:7101".into();
        assert_eq!(reachability(en, &peer), "Nothing waiting");
        peer.queued = 2;
        peer.oldest_queued_at_ms = 1_764_458_040_000;
        assert_eq!(
            reachability(en, &peer),
            "Delivering; waiting since 29 Nov 2025, 23:14 UTC"
        );
        peer.last_error = "connection refused <x>".into();
        let down = reachability(en, &peer);
        assert!(
            down.contains("Unreachable: messages waiting since 29 Nov 2025, 23:14 UTC"),
            "{down}"
        );
        assert!(down.contains("connection refused &lt;x&gt;"), "{down}");
    }

    #[test]
    fn a_key_near_its_end_is_flagged_and_a_revoked_one_says_so() {
        let en = catalogue::english();
        let now = 1_764_458_040_000;
        let mut key = pb::KeyInfo {
            key_id: "k1".into(),
            not_before_ms: now - DAY_MS,
            not_after_ms: now + 10 * DAY_MS + 1000,
            active: true,
            ..Default::default()
        };
        let soon = key_state(en, &key, now);
        assert!(soon.contains("expires in 10 days"), "{soon}");
        assert!(soon.contains("class=\"warning\""), "{soon}");
        key.not_after_ms = now + 400 * DAY_MS + 1000;
        let later = key_state(en, &key, now);
        assert!(later.contains("expires in 400 days"), "{later}");
        assert!(!later.contains("warning"), "{later}");
        key.revoked_at_ms = now - 1000;
        key.revocation_reason = "compromised".into();
        let revoked = key_state(en, &key, now);
        assert!(
            revoked.contains("Revoked") && revoked.contains("compromised"),
            "{revoked}"
        );
        key.revoked_at_ms = 0;
        key.not_after_ms = now - 1;
        assert!(key_state(en, &key, now).contains("Expired"));
    }
}
