//! What an edge tells operators: its metrics, and the spans of the messages it takes from
//! clients and writes to them. A sent message's span is the root of its trace; the owner's span
//! and every edge's delivery span hang under it.

use std::sync::LazyLock;

use parley_core::Error;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::event::Kind as EventKind;
use parley_telemetry::Counter;
use parley_telemetry::Histogram;
use parley_telemetry::KeyValue;
use parley_telemetry::UpDownCounter;

pub(crate) struct EdgeMetrics {
    connections: UpDownCounter<i64>,
    logins: Counter<u64>,
    received: Counter<u64>,
    delivered: Counter<u64>,
    batch_size: Histogram<u64>,
    delivery_duration: Histogram<f64>,
    slow_consumers: Counter<u64>,
    refused: Counter<u64>,
}

/// Made on first use, from the meter `parley_telemetry::Telemetry::init` installed (a process
/// without it records nothing).
static METRICS: LazyLock<EdgeMetrics> = LazyLock::new(|| {
    let meter = parley_telemetry::meter();
    EdgeMetrics {
        connections: meter
            .i64_up_down_counter("parley.connections")
            .with_description("Client connections open on this edge")
            .with_unit("{connection}")
            .build(),
        logins: meter
            .u64_counter("parley.logins")
            .with_description("Logins, by result: ok or the error code that refused them")
            .with_unit("{login}")
            .build(),
        received: meter
            .u64_counter("parley.messages.received")
            .with_description("Messages taken from clients and the server API, by kind and app")
            .with_unit("{message}")
            .build(),
        delivered: meter
            .u64_counter("parley.messages.delivered")
            .with_description("Messages and events queued to client connections, by kind")
            .with_unit("{message}")
            .build(),
        batch_size: meter
            .u64_histogram("parley.fanout.batch.size")
            .with_description("Sessions one delivery from an owner goes to on this edge")
            .with_unit("{session}")
            .with_boundaries(vec![
                1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0,
            ])
            .build(),
        delivery_duration: meter
            .f64_histogram("parley.delivery.duration")
            .with_description(
                "From the owner accepting a message to its queueing for a recipient's connection",
            )
            .with_unit("s")
            .with_boundaries(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ])
            .build(),
        slow_consumers: meter
            .u64_counter("parley.slow_consumer.disconnects")
            .with_description("Connections ended because their outbound queue was full")
            .with_unit("{connection}")
            .build(),
        refused: meter
            .u64_counter("parley.connections.refused")
            .with_description(
                "Connections closed before any request: too many from one address, or no request in time",
            )
            .with_unit("{connection}")
            .build(),
    }
});

pub(crate) fn connection_opened() {
    METRICS.connections.add(1, &[]);
}

pub(crate) fn connection_closed() {
    METRICS.connections.add(-1, &[]);
}

pub(crate) fn login<T>(result: &Result<T, Error>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(error) => error.code.as_str_name(),
    };
    METRICS.logins.add(1, &[KeyValue::new("result", outcome)]);
}

pub(crate) fn connection_refused(reason: &'static str) {
    METRICS.refused.add(1, &[KeyValue::new("reason", reason)]);
}

pub(crate) fn slow_consumer() {
    METRICS.slow_consumers.add(1, &[]);
}

/// The span of a message taken from a client or the server API, and the `traceparent` its
/// owner continues from when the span is sampled.
pub(crate) fn sent(kind: &'static str, app: &str) -> (tracing::Span, Option<String>) {
    METRICS.received.add(
        1,
        &[
            KeyValue::new("kind", kind),
            KeyValue::new("app", app.to_owned()),
        ],
    );
    let span = tracing::info_span!(
        "send",
        otel.kind = "producer",
        parley.role = "edge",
        messaging.system = "parley",
        messaging.operation.type = "send",
        parley.message.kind = kind,
    );
    let trace = parley_telemetry::traceparent(&span);
    (span, trace)
}

/// Records one delivery from an owner to `sessions` of this edge, and returns the span of its
/// writing when the message is traced (`Span::none()` otherwise).
pub(crate) fn delivering(frame: &SharedFrame, sessions: usize) -> tracing::Span {
    let (kind, accepted_ms) = match &frame.message().kind {
        Some(v1::server_frame::Kind::Event(v1::Event {
            kind: Some(EventKind::ChannelMessage(message)),
        })) => ("channel", Some(message.server_received_ts)),
        Some(v1::server_frame::Kind::Event(v1::Event {
            kind: Some(EventKind::MessageFromPeer(message)),
        })) if !message.is_offline_message => ("peer", Some(message.server_received_ts)),
        _ => ("event", None),
    };
    let attributes = [KeyValue::new("kind", kind)];
    METRICS.delivered.add(sessions as u64, &attributes);
    METRICS.batch_size.record(sessions as u64, &attributes);
    if let Some(accepted_ms) = accepted_ms {
        let waited_ms = parley_core::time::unix_ms()
            .saturating_sub(accepted_ms)
            .max(0);
        METRICS
            .delivery_duration
            .record(waited_ms as f64 / 1000.0, &attributes);
    }
    let Some(parent) = frame.trace() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "deliver",
        otel.kind = "consumer",
        parley.role = "edge",
        messaging.system = "parley",
        messaging.operation.type = "receive",
        messaging.batch.message_count = sessions,
    );
    parley_telemetry::follow(&span, parent);
    span
}
