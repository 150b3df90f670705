//! What operators see of a running cluster of `parley run` processes: one message's trace
//! across edge, owner and the receiving edge (exported over OTLP to a receiver in the test), the
//! metrics exported there, each node's `/metrics` as Prometheus text, and `/readyz`.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use parley_testkit::ProcessCluster;
use parley_testkit::http::http;
use parley_testkit::otlp::OtlpReceiver;
use parley_testkit::otlp::ReceivedSpan;
use parley_testkit::processes::CLUSTER_APP_ID;
use parley_testkit::processes::CLUSTER_SECRET;
use parley_testkit::processes::Role;

const PROMPTLY: Duration = Duration::from_secs(15);

fn ops_address(cluster: &ProcessCluster, id: u64) -> SocketAddr {
    cluster
        .ops_url(id)
        .trim_start_matches("http://")
        .parse()
        .expect("an ops address")
}

/// A family of the Prometheus text format: its type and its samples (labels, value).
#[derive(Debug, Default)]
struct Family {
    kind: String,
    samples: Vec<(BTreeMap<String, String>, f64)>,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_' || rest == ':')
}

/// Parses `{name="value",…}`, with the format's escapes.
fn parse_labels(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or(format!("label in {raw:?}"))?;
        if !is_metric_name(name) || name.contains(':') {
            return Err(format!("label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                    other => return Err(format!("escape {other:?} in {raw:?}")),
                },
                Some((at, '"')) => break at,
                Some((_, other)) => value.push(other),
                None => return Err(format!("unterminated label value in {raw:?}")),
            }
        };
        labels.insert(name.to_owned(), value);
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(labels)
}

/// Reads the Prometheus text exposition format strictly: every sample belongs to a family
/// declared by `# TYPE` before it, names and labels are well formed, values are numbers.
fn parse_prometheus(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_metric_name(name) {
                        return Err(format!("family name {name:?}"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(format!("type {kind:?} of {name}"));
                    }
                    families.entry(name.to_owned()).or_default().kind = kind.to_owned();
                }
                (Some("HELP"), Some(_), _) => {}
                _ => return Err(format!("comment {line:?}")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("sample {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            number => number.parse().map_err(|_| format!("value in {line:?}"))?,
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (
                name,
                parse_labels(
                    labels
                        .strip_suffix('}')
                        .ok_or(format!("labels in {line:?}"))?,
                )?,
            ),
            None => (series, BTreeMap::new()),
        };
        if !is_metric_name(name) {
            return Err(format!("metric name {name:?}"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| families.get(*base).is_some_and(|f| f.kind == "histogram"))
            .unwrap_or(name);
        families
            .get_mut(family)
            .ok_or(format!("{name} has no # TYPE before it"))?
            .samples
            .push((labels, value));
    }
    Ok(families)
}

async fn scrape(cluster: &ProcessCluster, id: u64) -> BTreeMap<String, Family> {
    let reply = http(ops_address(cluster, id), "GET", "/metrics", &[], None).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("text/plain")),
        "{:?}",
        reply.headers
    );
    parse_prometheus(&reply.text).unwrap_or_else(|error| panic!("node {id}: {error}"))
}

fn total(families: &BTreeMap<String, Family>, name: &str) -> f64 {
    families
        .get(name)
        .map(|family| family.samples.iter().map(|(_, value)| value).sum())
        .unwrap_or(0.0)
}

#[test]
fn the_prometheus_reader_of_these_tests_refuses_what_is_not_the_format() {
    let good = "# HELP a_total Things\n# TYPE a_total counter\na_total{k=\"v\\\"x\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
    let families = parse_prometheus(good).unwrap();
    assert_eq!(families["a_total"].samples[0].0["k"], "v\"x");
    assert_eq!(families["h"].samples.len(), 3);
    for bad in [
        "a_total 3\n",
        "# TYPE a counter\na{k=v} 1\n",
        "# TYPE a counter\na one\n",
        "# TYPE 1a counter\n",
        "# TYPE a kind\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?}");
    }
}

/// The spans of one trace, by name.
fn trace_of(spans: &[ReceivedSpan], trace_id: &[u8]) -> BTreeMap<String, Vec<ReceivedSpan>> {
    let mut by_name: BTreeMap<String, Vec<ReceivedSpan>> = BTreeMap::new();
    for span in spans.iter().filter(|span| span.trace_id == trace_id) {
        by_name
            .entry(span.name.clone())
            .or_default()
            .push(span.clone());
    }
    by_name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_one_trace_from_edge_to_owner_to_edge_and_every_node_reports() {
    let receiver = OtlpReceiver::start().await;
    let mut cluster = ProcessCluster::start_with_env(
        env!("CARGO_BIN_EXE_parley").as_ref(),
        1,
        1,
        2,
        &[
            "--otlp-endpoint",
            &receiver.endpoint,
            "--trace-sample-ratio",
            "1",
        ],
        // Spans and metrics go out within a fraction of a second, not the defaults' 5 and 60 s.
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ],
    )
    .await;
    let edges = cluster.ids(Role::Edge);
    let (owner, meta) = (cluster.ids(Role::Owner)[0], cluster.ids(Role::Meta)[0]);
    let urls = cluster.edge_urls();

    let (bob, mut bob_events) = Client::login(ClientConfig::new(&urls[1], CLUSTER_APP_ID, "bob"))
        .await
        .expect("bob logs in on the second edge");
    bob.join("room").await.expect("bob joins");
    let (alice, _alice_events) =
        Client::login(ClientConfig::new(&urls[0], CLUSTER_APP_ID, "alice"))
            .await
            .expect("alice logs in on the first edge");
    alice.join("room").await.expect("alice joins");
    alice
        .send_message("room", Message::text("traced"))
        .await
        .expect("alice sends");
    tokio::time::timeout(PROMPTLY, async {
        while let Some(event) = bob_events.recv().await {
            if matches!(event, Event::ChannelMessage(_)) {
                return;
            }
        }
    })
    .await
    .expect("bob hears alice");

    // One trace: alice's edge sent, the owner processed, bob's edge delivered, each span the
    // child of the one before, each from its own node.
    let (first_edge, second_edge) = (edges[0].to_string(), edges[1].to_string());
    let trace = tokio::time::timeout(PROMPTLY, async {
        loop {
            let spans = receiver.spans();
            let sent = spans
                .iter()
                .find(|span| span.name == "send" && span.node == first_edge);
            if let Some(sent) = sent {
                let trace = trace_of(&spans, &sent.trace_id);
                if trace.contains_key("process") && trace.contains_key("deliver") {
                    return trace;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no whole trace arrived: {:#?}", receiver.spans()));
    let [sent] = trace["send"].as_slice() else {
        panic!("one send span: {trace:#?}");
    };
    let [processed] = trace["process"].as_slice() else {
        panic!("one process span: {trace:#?}");
    };
    let [delivered] = trace["deliver"].as_slice() else {
        panic!("one deliver span (bob's edge; alice is the sender): {trace:#?}");
    };
    assert_eq!(sent.attributes["parley.role"], "edge");
    assert_eq!(sent.attributes["messaging.system"], "parley");
    assert_eq!(sent.attributes["parley.message.kind"], "channel");
    assert!(sent.parent_span_id.is_empty(), "the send is the root");
    assert_eq!(processed.node, owner.to_string());
    assert_eq!(processed.attributes["parley.role"], "owner");
    assert_eq!(processed.parent_span_id, sent.span_id);
    assert_eq!(delivered.node, second_edge);
    assert_eq!(delivered.attributes["parley.role"], "edge");
    assert_eq!(delivered.attributes["messaging.batch.message_count"], "1");
    assert_eq!(delivered.parent_span_id, processed.span_id);

    // The metrics each role exports over OTLP.
    let expected: [(u64, &[&str]); 4] = [
        (
            edges[0],
            &[
                "parley.messages.received",
                "parley.logins",
                "parley.connections",
                "parley.ring.epoch",
            ],
        ),
        (
            edges[1],
            &[
                "parley.messages.delivered",
                "parley.delivery.duration",
                "parley.fanout.batch.size",
            ],
        ),
        (
            owner,
            &[
                "parley.shard.queue.depth",
                "db.client.operation.duration",
                "parley.ring.epoch",
            ],
        ),
        (meta, &["parley.meta.raft.term", "parley.meta.raft.leader"]),
    ];
    for (node, names) in expected {
        let wanted: BTreeSet<String> = names.iter().map(|name| name.to_string()).collect();
        tokio::time::timeout(PROMPTLY, async {
            while !receiver
                .metric_names(&node.to_string())
                .is_superset(&wanted)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "node {node} exported {:?}, not all of {wanted:?}",
                receiver.metric_names(&node.to_string())
            )
        });
    }

    // The same, scraped from each node's /metrics.
    let sender = scrape(&cluster, edges[0]).await;
    let received = &sender["parley_messages_received_total"];
    assert_eq!(received.kind, "counter");
    assert!(received.samples.iter().any(|(labels, value)| {
        labels.get("kind").map(String::as_str) == Some("channel")
            && labels.get("app").map(String::as_str) == Some(CLUSTER_APP_ID)
            && *value == 1.0
    }));
    assert!(
        sender["parley_logins_total"]
            .samples
            .iter()
            .any(|(labels, value)| labels["result"] == "ok" && *value >= 1.0)
    );
    assert_eq!(total(&sender, "parley_connections"), 1.0, "alice");
    let receiving = scrape(&cluster, edges[1]).await;
    assert_eq!(
        receiving["parley_delivery_duration_seconds"].kind,
        "histogram"
    );
    assert!(
        receiving["parley_messages_delivered_total"]
            .samples
            .iter()
            .any(|(labels, value)| labels["kind"] == "channel" && *value == 1.0)
    );
    let owning = scrape(&cluster, owner).await;
    assert_eq!(
        owning["db_client_operation_duration_seconds"].kind,
        "histogram"
    );
    assert!(total(&owning, "parley_ring_epoch") >= 1.0);
    let leading = scrape(&cluster, meta).await;
    assert!(total(&leading, "parley_meta_raft_term") >= 1.0);
    assert_eq!(total(&leading, "parley_meta_raft_leader"), meta as f64);

    // Every node is alive and ready; a drained edge is alive and no longer ready.
    for id in [edges[0], edges[1], owner, meta] {
        let address = ops_address(&cluster, id);
        assert_eq!(
            http(address, "GET", "/healthz", &[], None).await.status,
            200
        );
        let ready = http(address, "GET", "/readyz", &[], None).await;
        assert_eq!(ready.status, 200, "node {id}: {}", ready.text);
    }
    // An owner whose store does not answer is not ready until it does again.
    let owner_ops = ops_address(&cluster, owner);
    cluster.redis().stop();
    let reason = readiness_until(owner_ops, 503).await;
    assert!(reason.starts_with("store:"), "{reason}");
    cluster.redis().restart();
    readiness_until(owner_ops, 200).await;

    let drained = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .args([
            "cluster",
            "drain",
            "--meta",
            &cluster.meta_addresses().join(","),
        ])
        .args(["--node-id", &edges[1].to_string()])
        .env("PARLEY_CLUSTER_SECRET", CLUSTER_SECRET)
        .output()
        .await
        .expect("run parley cluster drain");
    assert!(drained.status.success(), "{drained:?}");
    let address = ops_address(&cluster, edges[1]);
    assert_eq!(readiness_until(address, 503).await.trim(), "draining");
    assert_eq!(
        http(address, "GET", "/healthz", &[], None).await.status,
        200
    );
}

/// Polls `/readyz` at `address` until it answers `status`; the body then.
async fn readiness_until(address: SocketAddr, status: u16) -> String {
    tokio::time::timeout(PROMPTLY, async {
        loop {
            let ready = http(address, "GET", "/readyz", &[], None).await;
            if ready.status == status {
                return ready.text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{address}/readyz never answered {status}"))
}
