//! The `kinbridge` binary as a user runs it: the demo, the development PKI, the example
//! configs, `send` and `inbox` against real node processes, and fail-fast startup errors.

mod common;

use common::*;

#[test]
fn demo_runs_the_federation_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = kinbridge();
    cmd.arg("demo").current_dir(dir.path());
    let out = run_bounded(cmd);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("receipt verified independently"),
        "{stdout}"
    );
    assert!(
        stdout.contains("done: a referral crossed from ZM-DSW to MW-DSW"),
        "{stdout}"
    );
    // The fictional child's name is never printed.
    assert!(
        !stdout.contains("Chipo") && !stdout.contains("Banda"),
        "{stdout}"
    );
    // A second run reuses the PKI.
    let mut cmd = kinbridge();
    cmd.arg("demo").current_dir(dir.path());
    let out = run_bounded(cmd);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("already complete"));
}

#[test]
fn dev_certs_is_idempotent_and_example_configs_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = kinbridge();
    cmd.arg("dev-certs").current_dir(dir.path());
    let first = run_bounded(cmd);
    assert!(first.status.success());
    let ca = std::fs::read(dir.path().join("certs-dev/ZM-DSW/ca.crt")).expect("ca made");
    let mut cmd = kinbridge();
    cmd.arg("dev-certs").current_dir(dir.path());
    let second = run_bounded(cmd);
    assert!(
        text(&second.stdout).contains("nothing to do"),
        "{}",
        text(&second.stdout)
    );
    assert_eq!(
        std::fs::read(dir.path().join("certs-dev/ZM-DSW/ca.crt")).expect("ca"),
        ca
    );

    // The committed example configs load against that PKI.
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).expect("dir");
    for name in ["zambia", "malawi", "zimbabwe"] {
        let src =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/{name}.toml"));
        let dst = config_dir.join(format!("{name}.toml"));
        std::fs::copy(&src, &dst).expect("copy");
        let config = kinbridge_node::NodeConfig::load(&dst).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.development);
        assert_eq!(config.peers.len(), 2);
    }
}

#[tokio::test]
async fn send_and_inbox_against_node_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = TwoNodes::start(dir.path());
    let (zm_config, mw_config) = (&nodes.zm_config, &nodes.mw_config);
    let (zambia, malawi) = (&nodes.zambia, &nodes.malawi);

    let mut send = kinbridge();
    send.args([
        "send",
        "--to",
        "MW-DSW",
        "--consent",
        "C-77",
        "--given-by",
        "guardian",
        "--case-ref",
        "ZM-77",
        "--migratory-status",
        "separated",
    ])
    .arg("--config")
    .arg(zm_config)
    .arg("--node")
    .arg(zambia.local_addr.to_string());
    let out = run_bounded(send);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("delivered to MW-DSW"), "{stdout}");
    let message_id = stdout.split_whitespace().nth(1).expect("id").to_owned();

    let inbox = |extra: &[&str]| {
        let mut cmd = kinbridge();
        cmd.arg("inbox")
            .arg("--config")
            .arg(mw_config)
            .arg("--node")
            .arg(malawi.local_addr.to_string())
            .args(extra);
        let out = run_bounded(cmd);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let listed = inbox(&[]);
    assert!(
        listed.contains(&message_id) && listed.contains("PROTECTION_CONCERNS"),
        "{listed}"
    );
    let sequence = listed
        .split_whitespace()
        .next()
        .expect("seq")
        .trim_start_matches('#')
        .to_owned();
    assert!(inbox(&["--ack", &sequence]).contains("acknowledged"));
    assert!(inbox(&[]).contains("is empty"));
    assert!(inbox(&["--all"]).contains("(acknowledged)"));

    // The guardian withdraws the consent: Malawi deletes the referral and signs for it.
    let mut withdraw = kinbridge();
    withdraw
        .args(["withdraw", "--consent", "C-77", "--config"])
        .arg(zm_config)
        .arg("--node")
        .arg(zambia.local_addr.to_string());
    let out = run_bounded(withdraw);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("MW-DSW: deleted; signed receipt held"),
        "{stdout}"
    );
}

#[test]
fn startup_errors_are_clear_and_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("certs-dev");
    kinbridge_node::devpki::ensure(&pki, &[node_id("ZM-DSW"), node_id("MW-DSW")]).expect("pki");

    // Development material in a node that does not say it is a development node.
    let config = dir.path().join("prod.toml");
    let toml = dev_config_toml(&pki, "ZM-DSW", &dir.path().join("zm"), &[("MW-DSW", None)])
        .replace("development = true", "development = false");
    std::fs::write(&config, toml).expect("write");
    let mut cmd = kinbridge();
    cmd.args(["node", "--config"]).arg(&config);
    let out = run_bounded(cmd);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refusing development material") && stderr.contains("prod.toml"),
        "{stderr}"
    );

    // A config error names the file, the key and what was expected.
    let config = dir.path().join("bad.toml");
    let toml = dev_config_toml(&pki, "ZM-DSW", &dir.path().join("zm"), &[("MW-DSW", None)])
        .replace("node_id = \"ZM-DSW\"", "node_id = \"Zambia\"");
    std::fs::write(&config, toml).expect("write");
    let mut cmd = kinbridge();
    cmd.args(["node", "--config"]).arg(&config);
    let out = run_bounded(cmd);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.toml: node_id:") && stderr.contains("ISO 3166-1"),
        "{stderr}"
    );
}

#[test]
fn config_check_names_the_file_the_key_and_what_is_expected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("certs-dev");
    kinbridge_node::devpki::ensure(&pki, &[node_id("ZM-DSW"), node_id("MW-DSW")]).expect("pki");
    let good = dev_config_toml(&pki, "ZM-DSW", &dir.path().join("zm"), &[("MW-DSW", None)]);
    let check = |name: &str, toml: &str| {
        let config = dir.path().join(name);
        std::fs::write(&config, toml).expect("write");
        let mut cmd = kinbridge();
        cmd.args(["config", "check", "--config"]).arg(&config);
        let out = run_bounded(cmd);
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, stdout, stderr) = check("good.toml", &good);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("OK: ") && stdout.contains("valid config for node ZM-DSW"),
        "{stdout}"
    );
    assert!(
        stdout.contains("signing key: ZM-DSW-dev1 (fingerprint "),
        "{stdout}"
    );
    // It does not start the node: no store was made.
    assert!(!dir.path().join("zm").exists());

    let (ok, _, stderr) = check(
        "bad-metrics.toml",
        &good.replace("metrics = \"127.0.0.1:0\"", "metrics = \"everywhere\""),
    );
    assert!(!ok);
    assert!(
        stderr.contains("bad-metrics.toml: listen.metrics: an IP address and port"),
        "{stderr}"
    );
    let (ok, _, stderr) = check(
        "bad-unit.toml",
        &good.replace(
            "[local_clients]\n",
            "[local_clients]\nintake_unit = \"Intake Desk\"\n",
        ),
    );
    assert!(!ok);
    assert!(
        stderr.contains("bad-unit.toml: local_clients.intake_unit:")
            && stderr.contains("unit name"),
        "{stderr}"
    );
    let (ok, _, stderr) = check(
        "unknown-key.toml",
        &format!("{good}\nlog_level = \"debug\"\n"),
    );
    assert!(!ok);
    assert!(
        stderr.contains("unknown-key.toml: line") && stderr.contains("log_level"),
        "{stderr}"
    );
    // Malawi's node certificate in Zambia's config: the file is named, and why.
    let malawi = kinbridge_node::devpki::DevNodeFiles::new(&pki, &node_id("MW-DSW"));
    let zambia = kinbridge_node::devpki::DevNodeFiles::new(&pki, &node_id("ZM-DSW"));
    let swapped = good
        .replace(
            &zambia.node_cert().display().to_string(),
            &malawi.node_cert().display().to_string(),
        )
        .replace(
            &zambia.node_key().display().to_string(),
            &malawi.node_key().display().to_string(),
        );
    let (ok, _, stderr) = check("swapped.toml", &swapped);
    assert!(!ok);
    assert!(
        stderr.contains("MW-DSW/node.crt")
            && stderr.contains("names node 'MW-DSW', but node_id is 'ZM-DSW'"),
        "{stderr}"
    );
}

#[tokio::test]
async fn keys_and_peers_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = TwoNodes::start(dir.path());
    let admin = kinbridge_node::devpki::DevNodeFiles::new(&nodes.pki, &node_id("ZM-DSW"));
    let admin_cli = |command: &str, args: &[&str]| {
        let mut cmd = kinbridge();
        cmd.arg(command)
            .args(args)
            .arg("--config")
            .arg(&nodes.zm_config)
            .arg("--node")
            .arg(nodes.zambia.local_addr.to_string())
            .arg("--cert")
            .arg(admin.client_cert("admin"))
            .arg("--key")
            .arg(admin.client_key("admin"));
        let out = run_bounded(cmd);
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let keys = |args: &[&str]| admin_cli("keys", args);
    let (ok, listed, stderr) = keys(&["list"]);
    assert!(ok, "{stderr}");
    assert!(
        listed.contains("ZM-DSW-dev1")
            && listed.contains("ACTIVE")
            && listed.contains("MW-DSW-dev1"),
        "{listed}"
    );
    let public = dir.path().join("new.pub");
    let (ok, rotated, stderr) = keys(&[
        "rotate",
        "--key-id",
        "ZM-DSW-2",
        "--public-key-out",
        public.to_str().expect("path"),
    ]);
    assert!(ok, "{stderr}");
    assert!(rotated.contains("new signing key ZM-DSW-2"), "{rotated}");
    assert!(rotated.contains("announced to: MW-DSW"), "{rotated}");
    assert!(
        std::fs::read_to_string(&public)
            .expect("pub")
            .contains("BEGIN PUBLIC KEY")
    );
    // The peer registry as the node runs it.
    let (ok, peers, stderr) = admin_cli("peers", &["list"]);
    assert!(ok, "{stderr}");
    assert!(
        peers.contains(&format!("MW-DSW  https://{}", nodes.malawi.peer_addr))
            && peers.contains("keys=[MW-DSW-dev1]"),
        "{peers}"
    );
    // A caseworker's certificate is refused, and the refusal says which role is needed.
    let mut cmd = kinbridge();
    cmd.args(["keys", "rotate", "--config"])
        .arg(&nodes.zm_config)
        .arg("--node")
        .arg(nodes.zambia.local_addr.to_string());
    let out = run_bounded(cmd);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("PermissionDenied [role-denied]") && stderr.contains("admin"),
        "{stderr}"
    );
}

/// `kinbridge tracing` at two in-process nodes: a record in Malawi, a family's request in
/// Zambia, the match listed at both, confirmed at both, and the disclosure shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_from_the_command_line() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut configs = std::collections::HashMap::new();
    for (me, peer) in [("ZM-DSW", "MW-DSW"), ("MW-DSW", "ZM-DSW")] {
        let toml = dev_config_toml(
            &fed.pki,
            me,
            &fed.dir.path().join("cli-data").join(me),
            &[(peer, None)],
        );
        let path = fed.dir.path().join(format!("{me}.toml"));
        std::fs::write(&path, toml).expect("config");
        configs.insert(me, path);
    }
    let run = |node: &str, args: Vec<String>| {
        let mut cmd = kinbridge();
        cmd.arg("tracing")
            .arg(&args[0])
            .arg("--config")
            .arg(&configs[node])
            .arg("--node")
            .arg(fed.node(node).local_addr.to_string())
            .args(&args[1..]);
        async move {
            let out = tokio::task::spawn_blocking(move || run_bounded(cmd))
                .await
                .expect("command task");
            let stdout = text(&out.stdout);
            assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
            stdout
        }
    };
    let args = |s: &[&str]| s.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let record = run(
        "MW-DSW",
        args(&[
            "register",
            "--record",
            "--consent",
            "MW-TRACE-1",
            "--given-by",
            "child",
            "--recipient",
            "ZM-DSW",
            "--given-name",
            "Chikondi",
            "--family-name",
            "Banda",
            "--sex",
            "female",
            "--birth-date",
            "2013-07-21",
            "--separated-at",
            "Mchinji border",
            "--relative",
            "father:Yohane Banda",
        ]),
    )
    .await;
    assert!(record.starts_with("registered tracing case"), "{record}");
    let request = run(
        "ZM-DSW",
        args(&[
            "register",
            "--request",
            "--consent",
            "ZM-TRACE-2",
            "--given-by",
            "parent",
            "--recipient",
            "MW-DSW",
            "--given-name",
            "Chikondi",
            "--family-name",
            "Bandah",
            "--sex",
            "female",
            "--birth-year",
            "2013",
            "--separated-at",
            "Mchinji",
            "--relative",
            "father:Yohane Banda",
        ]),
    )
    .await;
    assert!(request.contains("queued for MW-DSW"), "{request}");

    // Poll (bounded) until each side lists the match.
    let mut ids = std::collections::HashMap::new();
    for node in ["ZM-DSW", "MW-DSW"] {
        let deadline = std::time::Instant::now() + WAIT;
        let listed = loop {
            let listed = run(node, args(&["matches"])).await;
            if !listed.starts_with("no tracing match") {
                break listed;
            }
            assert!(std::time::Instant::now() < deadline, "{node}: no match");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert!(listed.contains("pending"), "{listed}");
        assert!(
            !listed.contains("Chikondi"),
            "no name before confirmation: {listed}"
        );
        ids.insert(
            node,
            listed.split_whitespace().next().expect("id").to_owned(),
        );
    }
    for node in ["ZM-DSW", "MW-DSW"] {
        let confirmed = run(node, args(&["confirm", &ids[node]])).await;
        assert!(confirmed.contains("confirmed here: yes"), "{confirmed}");
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed = run("ZM-DSW", args(&["matches"])).await;
        if listed.contains("disclosed by MW-DSW") {
            assert!(listed.contains("Chikondi Banda"), "{listed}");
            assert!(listed.contains("born 2013-07-21"), "{listed}");
            assert!(listed.contains("father: Yohane Banda"), "{listed}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no disclosure: {listed}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    fed.shutdown().await;
}

/// `kinbridge tracing register` with a best-interests determination: without the determining
/// authority and legal basis it is refused, naming the flags (nothing is registered that could
/// never match); with `--bid-authority` and `--legal-basis` the record is registered and a
/// family's request from the peer finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_register_with_a_best_interests_determination() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut configs = std::collections::HashMap::new();
    for (me, peer) in [("ZM-DSW", "MW-DSW"), ("MW-DSW", "ZM-DSW")] {
        let toml = dev_config_toml(
            &fed.pki,
            me,
            &fed.dir.path().join("cli-data").join(me),
            &[(peer, None)],
        );
        let path = fed.dir.path().join(format!("{me}.toml"));
        std::fs::write(&path, toml).expect("config");
        configs.insert(me, path);
    }
    let run = |node: &str, args: Vec<String>| {
        let mut cmd = kinbridge();
        cmd.arg("tracing")
            .arg(&args[0])
            .arg("--config")
            .arg(&configs[node])
            .arg("--node")
            .arg(fed.node(node).local_addr.to_string())
            .args(&args[1..]);
        async move {
            tokio::task::spawn_blocking(move || run_bounded(cmd))
                .await
                .expect("command task")
        }
    };
    let record = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "register",
            "--record",
            "--consent",
            "MW-BID-7",
            "--given-by",
            "best-interests",
            "--recipient",
            "ZM-DSW",
            "--given-name",
            "Chikondi",
            "--family-name",
            "Banda",
            "--sex",
            "female",
            "--birth-date",
            "2013-07-21",
            "--separated-at",
            "Mchinji border",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let refused = run("MW-DSW", record(&[])).await;
    assert!(!refused.status.success(), "{}", text(&refused.stdout));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("--bid-authority"), "{stderr}");
    assert!(stderr.contains("determining_authority"), "{stderr}");
    let refused = run(
        "MW-DSW",
        record(&["--bid-authority", "Mchinji BID committee"]),
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("--legal-basis"),
        "{}",
        text(&refused.stderr)
    );

    let registered = run(
        "MW-DSW",
        record(&[
            "--bid-authority",
            "Mchinji BID committee",
            "--legal-basis",
            "Child Care, Protection and Justice Act s. 4",
        ]),
    )
    .await;
    assert!(registered.status.success(), "{}", text(&registered.stderr));
    assert!(text(&registered.stdout).starts_with("registered tracing case"));
    let request = run(
        "ZM-DSW",
        [
            "register",
            "--request",
            "--consent",
            "ZM-TRACE-8",
            "--given-by",
            "parent",
            "--recipient",
            "MW-DSW",
            "--given-name",
            "Chikondi",
            "--family-name",
            "Bandah",
            "--sex",
            "female",
            "--birth-year",
            "2013",
            "--separated-at",
            "Mchinji",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
    )
    .await;
    assert!(request.status.success(), "{}", text(&request.stderr));
    // The best-interests record matches: Malawi lists the match (bounded poll).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed = run("MW-DSW", vec!["matches".to_owned()]).await;
        let stdout = text(&listed.stdout);
        if stdout.contains("pending") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no match: {stdout}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    fed.shutdown().await;
}

/// `kinbridge send --to-unit` with a unit the recipient does not have: the recipient's signed
/// refusal comes back, and the command fails saying why (the reason code, the unit, the
/// recipient's units).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_an_unknown_unit_says_which_units_there_are() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let toml = dev_config_toml(
        &fed.pki,
        "ZM-DSW",
        &fed.dir.path().join("cli-data").join("ZM-DSW"),
        &[("MW-DSW", None)],
    );
    let config = fed.dir.path().join("ZM-DSW.toml");
    std::fs::write(&config, toml).expect("config");
    let mut send = kinbridge();
    send.args([
        "send",
        "--to",
        "MW-DSW",
        "--to-unit",
        "mangochi-distict",
        "--consent",
        "C-78",
        "--given-by",
        "guardian",
        "--migratory-status",
        "separated",
    ])
    .arg("--config")
    .arg(&config)
    .arg("--node")
    .arg(fed.node("ZM-DSW").local_addr.to_string());
    let out = tokio::task::spawn_blocking(move || run_bounded(send))
        .await
        .expect("command task");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    for needle in [
        "refused",
        "unknown-unit",
        "mangochi-distict",
        "mangochi-district",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    fed.shutdown().await;
}

/// `kinbridge forward` waits for the next node's signed receipt, as `send` does, and says
/// it was delivered (before, it printed "queued" and left the caseworker to guess).
#[tokio::test]
async fn forward_waits_for_the_next_nodes_receipt() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW", "ZW-DSD"]).await;
    let mut request = submit_request("MW-DSW");
    if let Some(consent) = request.consent.as_mut() {
        consent.onward_recipients = vec!["ZW-DSD".into()];
    }
    submit_delivered(&mut fed.local("ZM-DSW", "caseworker"), request).await;
    let toml = dev_config_toml(
        &fed.pki,
        "MW-DSW",
        &fed.dir.path().join("cli-data").join("MW-DSW"),
        &[("ZW-DSD", None)],
    );
    let config = fed.dir.path().join("MW-DSW.toml");
    std::fs::write(&config, toml).expect("config");
    let mut forward = kinbridge();
    forward
        .args(["forward", "--seq", "1", "--to", "ZW-DSD", "--config"])
        .arg(&config)
        .arg("--node")
        .arg(fed.node("MW-DSW").local_addr.to_string());
    let out = tokio::task::spawn_blocking(move || run_bounded(forward))
        .await
        .expect("command task");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("queued "), "{stdout}");
    assert!(
        stdout.contains("delivered to ZW-DSD after 1 attempt(s); signed receipt held"),
        "{stdout}"
    );
    let items = open_inbox(&mut fed.local("ZW-DSD", "caseworker")).await;
    assert_eq!(
        items.len(),
        1,
        "the forwarded referral is in Zimbabwe's inbox"
    );
    fed.shutdown().await;
}

/// The caseworker's identity by `--cert/--key`: a certificate of `node`'s local CA for
/// `name`, a caseworker of `unit`, issued into `dir`.
fn caseworker(
    pki: &std::path::Path,
    node: &str,
    name: &str,
    unit: &str,
    dir: &std::path::Path,
) -> [std::path::PathBuf; 2] {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    kinbridge_node::devpki::issue_local_client(
        pki,
        &node_id(node),
        name,
        "caseworker",
        Some(unit),
        &[],
        &cert,
        &key,
    )
    .expect("issue caseworker certificate");
    [cert, key]
}

/// Runs `kinbridge` with `args` then `extra` (paths), bounded; returns (success, stdout,
/// stderr).
fn run_cli(args: &[&str], extra: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let mut cmd = kinbridge();
    cmd.args(args).args(extra);
    let out = run_bounded(cmd);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// A border committee's referral from submission to closure with the CLI alone: `send
/// --file` at Zambia by a caseworker's `--cert/--key` (no config at all), `inbox show` at
/// Malawi by the receiving unit's caseworker (the details visible), accept, start, close with
/// an outcome, the history at both ends (`--json` parsed), and the auditor's `audit list`.
/// A caseworker of another unit is refused, told why and what to do.
#[tokio::test]
async fn a_referral_from_submission_to_closure_with_the_cli_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = TwoNodes::start(dir.path());
    // Malawi answers with status updates: it needs Zambia's endpoint (same store and ports).
    let mw_toml = dev_config_toml(
        &nodes.pki,
        "MW-DSW",
        &dir.path().join("mw"),
        &[(
            "ZM-DSW",
            Some(format!("https://{}", nodes.zambia.peer_addr)),
        )],
    );
    std::fs::write(
        &nodes.mw_config,
        with_ports(
            &mw_toml,
            nodes.malawi.peer_addr.port(),
            nodes.malawi.local_addr.port(),
        ),
    )
    .expect("config");
    nodes.restart_malawi();
    let nodes = nodes;
    let pki = &nodes.pki;
    let ids = dir.path().join("ids");
    std::fs::create_dir_all(&ids).expect("dir");
    let zm_ca = kinbridge_node::devpki::DevNodeFiles::new(pki, &node_id("ZM-DSW")).ca_cert();
    let zm_addr = nodes.zambia.local_addr.to_string();
    let mw_addr = nodes.malawi.local_addr.to_string();
    let [zm_cert, zm_key] = caseworker(pki, "ZM-DSW", "chipata-cw", "chipata-district", &ids);
    let [mw_cert, mw_key] = caseworker(pki, "MW-DSW", "mchinji-cw", "mchinji-district", &ids);
    let [other_cert, other_key] =
        caseworker(pki, "MW-DSW", "mangochi-cw", "mangochi-district", &ids);
    // At Zambia: no config, the node, its CA and the caseworker's identity on the command line.
    let zm = |args: &[&str]| {
        run_cli(
            args,
            &[
                "--node".as_ref(),
                zm_addr.as_ref(),
                "--ca".as_ref(),
                zm_ca.as_os_str(),
                "--cert".as_ref(),
                zm_cert.as_os_str(),
                "--key".as_ref(),
                zm_key.as_os_str(),
            ],
        )
    };
    // At Malawi: the node's config for where it is, a caseworker's identity over its [client].
    let mw_as = |args: &[&str], cert: &std::path::Path, key: &std::path::Path| {
        run_cli(
            args,
            &[
                "--config".as_ref(),
                nodes.mw_config.as_os_str(),
                "--node".as_ref(),
                mw_addr.as_ref(),
                "--cert".as_ref(),
                cert.as_os_str(),
                "--key".as_ref(),
                key.as_os_str(),
            ],
        )
    };
    let mw = |args: &[&str]| mw_as(args, &mw_cert, &mw_key);

    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/referral-example.json");
    let example = example.to_str().expect("utf-8 path");
    let (ok, stdout, stderr) = zm(&["send", "--file", example, "--json"]);
    assert!(ok, "{stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let referral_id = lines[0]["messageId"]
        .as_str()
        .expect("messageId")
        .to_owned();
    assert_eq!(lines[1]["state"], "DELIVERY_STATE_DELIVERED", "{stdout}");

    // At Malawi, the receiving unit's caseworker sees the item and its details.
    let (ok, listed, stderr) = mw(&["inbox"]);
    assert!(ok && listed.contains(&referral_id), "{listed}\n{stderr}");
    let seq = listed
        .split_whitespace()
        .next()
        .expect("seq")
        .trim_start_matches('#')
        .to_owned();
    let (ok, shown, stderr) = mw(&["inbox", "show", &seq]);
    assert!(ok, "{shown}\n{stderr}");
    for expected in [
        "from: ZM-DSW",
        "unit: mchinji-district",
        "purpose: family-reunification",
        "consent: ZM-CONSENT-2026-0042 given by guardian (child's views recorded)",
        "case reference: ZM-CHP-2026-0042",
        "requested services: family-tracing, interim-care",
        "given names: Chisomo",
        "sex: female",
        "birth date: 2014-03-02",
        "current location: Chipata",
        "migratory status: separated",
        "urgency: high",
        "relationship: aunt",
        "last school: Example primary school",
        "nationality: MW",
        "workflow: received",
    ] {
        assert!(
            shown.contains(expected),
            "missing '{expected}' in:\n{shown}"
        );
    }
    let (ok, shown_json, _) = mw(&["inbox", "show", &seq, "--json"]);
    assert!(ok);
    let item: serde_json::Value = serde_json::from_str(shown_json.trim()).expect("json");
    assert_eq!(item["referral"]["identity"]["sex"], "SEX_FEMALE");
    assert_eq!(item["messageId"], referral_id.as_str());
    assert!(item.get("envelope").is_none(), "{shown_json}");

    // A caseworker of another unit may not work it: refused, the reason and what to do said.
    let (ok, stdout, stderr) = mw_as(&["referral", "accept", &seq], &other_cert, &other_key);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("[other-unit]"), "{stderr}");
    assert!(stderr.contains("mchinji-district"), "{stderr}");
    assert!(
        stderr.contains("hint:") && stderr.contains("--cert/--key"),
        "{stderr}"
    );
    // Closing before accepting is refused too: the workflow says which steps come first.
    let (ok, _, stderr) = mw(&["referral", "close", &seq, "--outcome", "reunified"]);
    assert!(!ok, "{stderr}");

    // The receiving caseworker works it through; each update reaches Zambia with a receipt.
    for step in [
        vec!["referral", "accept", &seq],
        vec!["referral", "start", &format!("#{seq}")],
        vec!["referral", "close", &referral_id, "--outcome", "reunified"],
    ] {
        let (ok, stdout, stderr) = mw(&step);
        assert!(ok, "{step:?}: {stdout}\n{stderr}");
        assert!(stdout.contains("delivered to ZM-DSW"), "{stdout}");
    }

    // The history at Zambia, the sender, as text and as JSON.
    let (ok, status, stderr) = zm(&["referral", "status", &referral_id]);
    assert!(ok, "{status}\n{stderr}");
    assert!(
        status.contains(&format!("referral {referral_id}: closed (reunified)")),
        "{status}"
    );
    let steps: Vec<&str> = ["received", "accepted", "in-progress", "closed (reunified)"]
        .into_iter()
        .filter(|s| status.contains(&format!("{s}  by MW-DSW")))
        .collect();
    assert_eq!(steps.len(), 4, "{status}");
    let (ok, status_json, _) = zm(&["referral", "status", &referral_id, "--json"]);
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(status_json.trim()).expect("json");
    assert_eq!(status["state"], "REFERRAL_STATE_CLOSED");
    let history: Vec<&str> = status["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|c| c["state"].as_str().expect("state"))
        .collect();
    assert_eq!(
        history,
        [
            "REFERRAL_STATE_RECEIVED",
            "REFERRAL_STATE_ACCEPTED",
            "REFERRAL_STATE_IN_PROGRESS",
            "REFERRAL_STATE_CLOSED"
        ]
    );
    // At Malawi, by its inbox item.
    let (ok, status, _) = mw(&["referral", "status", &seq]);
    assert!(ok && status.contains("closed (reunified)"), "{status}");

    // Zambia's auditor lists the submission from the log, without any personal data.
    let zm_files = kinbridge_node::devpki::DevNodeFiles::new(pki, &node_id("ZM-DSW"));
    let (auditor_cert, auditor_key) = (
        zm_files.client_cert("auditor"),
        zm_files.client_key("auditor"),
    );
    let auditor: [&std::ffi::OsStr; 8] = [
        "--node".as_ref(),
        zm_addr.as_ref(),
        "--ca".as_ref(),
        zm_ca.as_os_str(),
        "--cert".as_ref(),
        auditor_cert.as_os_str(),
        "--key".as_ref(),
        auditor_key.as_os_str(),
    ];
    let (ok, listed, stderr) = run_cli(&["audit", "list", "--event", "submitted"], &auditor);
    assert!(ok, "{listed}\n{stderr}");
    let line = listed
        .lines()
        .find(|l| l.contains(&referral_id))
        .unwrap_or_else(|| panic!("no submitted entry for {referral_id}: {listed}"));
    assert!(
        line.contains("submitted")
            && line.contains("to=MW-DSW")
            && line.contains("actor=chipata-cw"),
        "{line}"
    );
    assert!(
        listed.lines().all(|l| l.contains(" submitted ")),
        "{listed}"
    );
    let (ok, listed, _) = run_cli(
        &[
            "audit",
            "list",
            "--message",
            &referral_id,
            "--json",
            "--since",
            "2020-01-01",
        ],
        &auditor,
    );
    assert!(ok);
    let events: Vec<String> = listed
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["event"].as_str().expect("event").to_owned()
        })
        .collect();
    assert!(
        events.contains(&"AUDIT_EVENT_DELIVERED".to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(&"AUDIT_EVENT_REFERRAL_STATUS".to_owned()),
        "{events:?}"
    );
    for name in ["Chisomo", "Fictional", "Chipata transit"] {
        assert!(!listed.contains(name), "{listed}");
    }
    let (ok, _, stderr) = run_cli(&["audit", "list", "--event", "sumbitted"], &auditor);
    assert!(!ok && stderr.contains("is not an audit event"), "{stderr}");

    // A case transfer by flags alone (sex and birth date among them), declined with a reason.
    let (ok, stdout, stderr) = zm(&[
        "send",
        "--to",
        "MW-DSW",
        "--to-unit",
        "mchinji-district",
        "--kind",
        "case-transfer",
        "--consent",
        "ZM-CONSENT-2026-0043",
        "--given-by",
        "parent",
        "--given-name",
        "Mphatso",
        "--sex",
        "male",
        "--birth-date",
        "2016-07-09",
        "--service",
        "reintegration",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let transfer_id = stdout.split_whitespace().nth(1).expect("id").to_owned();
    let (ok, listed, _) = mw(&["inbox", "--json"]);
    assert!(ok);
    let items: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let transfer = items
        .iter()
        .find(|i| i["messageId"] == transfer_id.as_str())
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(transfer["kind"], "MESSAGE_KIND_CASE_TRANSFER");
    assert_eq!(transfer["purpose"], "PURPOSE_RETURN_AND_REINTEGRATION");
    assert_eq!(transfer["referral"]["identity"]["sex"], "SEX_MALE");
    assert_eq!(transfer["referral"]["identity"]["birthDate"], "2016-07-09");
    let transfer_seq = transfer["sequence"].as_str().expect("sequence").to_owned();
    let (ok, shown, _) = mw(&["inbox", "show", &transfer_seq]);
    assert!(ok && shown.contains("kind: case-transfer"), "{shown}");
    let (ok, stdout, stderr) = mw(&["referral", "decline", &transfer_seq]);
    assert!(!ok && stderr.contains("--reason"), "{stdout}\n{stderr}");
    let (ok, stdout, stderr) = mw(&[
        "referral",
        "decline",
        &transfer_seq,
        "--reason",
        "no-capacity",
        "--json",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let delivery: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("line")).expect("json");
    assert_eq!(delivery["state"], "DELIVERY_STATE_DELIVERED", "{stdout}");
    let (ok, status, _) = zm(&["referral", "status", &transfer_id]);
    assert!(
        ok && status.contains(&format!("referral {transfer_id}: declined (no-capacity)")),
        "{status}"
    );

    // The admin's lists as JSON, by --cert/--key over Malawi's config.
    let mw_files = kinbridge_node::devpki::DevNodeFiles::new(pki, &node_id("MW-DSW"));
    let admin = |args: &[&str]| {
        mw_as(
            args,
            &mw_files.client_cert("admin"),
            &mw_files.client_key("admin"),
        )
    };
    let (ok, peers, stderr) = admin(&["peers", "list", "--json"]);
    assert!(ok, "{stderr}");
    let peers: serde_json::Value = serde_json::from_str(peers.trim()).expect("json");
    assert_eq!(peers["peers"][0]["nodeId"], "ZM-DSW", "{peers}");
    let (ok, keys, stderr) = admin(&["keys", "list", "--json"]);
    assert!(ok, "{stderr}");
    let keys: serde_json::Value = serde_json::from_str(keys.trim()).expect("json");
    assert!(
        keys["own"].as_array().is_some_and(|k| !k.is_empty()),
        "{keys}"
    );
}

/// `send --file` with a file the node would not understand, or without a recipient or a
/// consent, fails before anything is sent, naming the file, the field and what to give.
#[test]
fn send_file_mistakes_are_named_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"identity": {"givenNames": ["Test"], "sexx": "SEX_FEMALE"}}"#,
    )
    .expect("write");
    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, r#"{"caseReference": "ZM-1"}"#).expect("write");
    // Nothing listens there: a mistake in the submission is found before connecting.
    let access = [
        "--node",
        "127.0.0.1:9",
        "--ca",
        "x",
        "--cert",
        "x",
        "--key",
        "x",
    ];
    let send = |file: &std::path::Path, more: &[&str]| {
        let mut cmd = kinbridge();
        cmd.args(["send", "--file"])
            .arg(file)
            .args(more)
            .args(access);
        let out = run_bounded(cmd);
        assert!(!out.status.success());
        text(&out.stderr)
    };
    let said = send(&bad, &["--to", "MW-DSW"]);
    assert!(
        said.contains("bad.json")
            && said.contains("sexx")
            && said.contains("referral-example.json"),
        "{said}"
    );
    let said = send(&payload, &["--consent", "C-1", "--given-by", "parent"]);
    assert!(said.contains("--to is required"), "{said}");
    let said = send(&payload, &["--to", "MW-DSW"]);
    assert!(said.contains("--consent is required"), "{said}");
    let said = send(&dir.path().join("missing.json"), &["--to", "MW-DSW"]);
    assert!(said.contains("cannot read --file"), "{said}");
}
