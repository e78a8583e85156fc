//! Mutual TLS: a client without a certificate, or with one from a CA the node does not
//! trust, cannot complete a call; peer and local certificates only work on their own port.

mod common;

use std::time::Duration;

use common::*;
use kinbridge_core::envelope::danger::seal_unchecked as seal_envelope;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use kinbridge_proto::v1::peer_service_client::PeerServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn channel(addr: std::net::SocketAddr, ca: &[u8], identity: Option<Identity>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

fn identity(cert: &std::path::Path, key: &std::path::Path) -> Identity {
    Identity::from_pem(
        std::fs::read(cert).expect("cert"),
        std::fs::read(key).expect("key"),
    )
}

#[tokio::test]
async fn calls_without_a_trusted_client_certificate_fail() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    // A PKI the federation does not know.
    let stranger_pki = fed.dir.path().join("stranger");
    kinbridge_node::devpki::ensure(&stranger_pki, &[node_id("XX-EVIL")]).expect("pki");
    let stranger = kinbridge_node::devpki::DevNodeFiles::new(&stranger_pki, &node_id("XX-EVIL"));
    let mw = fed.files("MW-DSW");
    let ca = std::fs::read(mw.ca_cert()).expect("ca");
    let peer_addr = fed.node("MW-DSW").peer_addr;
    let local_addr = fed.node("MW-DSW").local_addr;
    let envelope = seal_envelope(
        &draft("ZM-DSW", "MW-DSW"),
        payload(),
        &fed.signing_key("ZM-DSW"),
    );
    let request = || pb::DeliverRequest {
        envelope: Some(envelope.clone().into()),
    };

    // Peer port: no certificate; a certificate from an untrusted CA; a local-client certificate.
    let zm = fed.files("ZM-DSW");
    let attempts = [
        ("no certificate", None),
        (
            "untrusted CA",
            Some(identity(&stranger.node_cert(), &stranger.node_key())),
        ),
        (
            "local-client certificate",
            Some(identity(
                &zm.client_cert("system"),
                &zm.client_key("system"),
            )),
        ),
    ];
    for (what, id) in attempts {
        let mut client = PeerServiceClient::new(channel(peer_addr, &ca, id));
        let result = client.deliver(request()).await;
        assert!(result.is_err(), "peer port accepted a call with {what}");
    }

    // Local port: no certificate; an untrusted CA; a peer node's certificate.
    let attempts = [
        ("no certificate", None),
        (
            "untrusted CA",
            Some(identity(
                &stranger.client_cert("caseworker"),
                &stranger.client_key("caseworker"),
            )),
        ),
        (
            "peer node certificate",
            Some(identity(&zm.node_cert(), &zm.node_key())),
        ),
    ];
    for (what, id) in attempts {
        let mut client = LocalServiceClient::new(channel(local_addr, &ca, id));
        let result = client.list_inbox(pb::ListInboxRequest::default()).await;
        assert!(result.is_err(), "local port accepted a call with {what}");
    }

    // The node still serves both ports.
    let mut good_peer = fed.peer_client_as("MW-DSW", "ZM-DSW");
    good_peer
        .deliver(request())
        .await
        .expect("peer port serves");
    let mut good_local = fed.local("MW-DSW", "caseworker");
    let items = good_local
        .list_inbox(pb::ListInboxRequest::default())
        .await
        .expect("local port serves")
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);
    fed.shutdown().await;
}

#[tokio::test]
async fn each_listener_trusts_its_own_roots_only_even_without_peers() {
    // Controls: each certificate is accepted where it belongs.
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let (zm, mw) = (fed.files("ZM-DSW"), fed.files("MW-DSW"));
    let zambia = fed.node("ZM-DSW");
    tls_handshake(
        zambia.local_addr,
        &zm.ca_cert(),
        &zm.client_cert("system"),
        &zm.client_key("system"),
    )
    .await
    .expect("a local client on the local port");
    tls_handshake(
        zambia.peer_addr,
        &zm.ca_cert(),
        &mw.node_cert(),
        &mw.node_key(),
    )
    .await
    .expect("a peer on the peer port");
    // A peer's certificate on the local port: refused at the handshake.
    let refused = tls_handshake(
        zambia.local_addr,
        &zm.ca_cert(),
        &mw.node_cert(),
        &mw.node_key(),
    )
    .await
    .expect_err("a peer certificate on the local port");
    assert!(refused.contains("UnknownCA"), "{refused}");
    // A local client on the peer port: refused at the handshake, not after it.
    let refused = tls_handshake(
        zambia.peer_addr,
        &zm.ca_cert(),
        &zm.client_cert("system"),
        &zm.client_key("system"),
    )
    .await
    .expect_err("a local certificate on the peer port");
    assert!(refused.contains("UnknownCA"), "{refused}");
    fed.shutdown().await;

    // A node with no peers at all: its peer port trusts no CA, so it refuses every
    // handshake, its own authority's local clients included.
    let alone = Federation::start(&["ZW-DSD"]).await;
    let zw = alone.files("ZW-DSD");
    let node = alone.node("ZW-DSD");
    for role in ["system", "admin", "caseworker"] {
        let refused = tls_handshake(
            node.peer_addr,
            &zw.ca_cert(),
            &zw.client_cert(role),
            &zw.client_key(role),
        )
        .await
        .expect_err("a local certificate on the peer port of a node without peers");
        assert!(refused.contains("UnknownCA"), "{role}: {refused}");
    }
    let refused = tls_handshake(
        node.peer_addr,
        &zw.ca_cert(),
        &zw.node_cert(),
        &zw.node_key(),
    )
    .await
    .expect_err("even the node's own certificate");
    assert!(refused.contains("UnknownCA"), "{refused}");
    // Its local port still serves its own clients.
    tls_handshake(
        node.local_addr,
        &zw.ca_cert(),
        &zw.client_cert("system"),
        &zw.client_key("system"),
    )
    .await
    .expect("a local client on the local port");
    alone.shutdown().await;
}
