//! Traces and metrics of a Parley node: logs on standard error, spans exported over OTLP
//! (gRPC) when an endpoint is configured, and every metric both in the Prometheus registry
//! behind `/metrics` and, with an endpoint, pushed over OTLP.
//!
//! A message carries its trace from node to node as a W3C `traceparent` string
//! ([`traceparent`], [`follow`]); only sampled messages carry one, so an unsampled message costs
//! no span downstream. Instruments are made from the global meter ([`meter`]): before
//! [`Telemetry::init`] (in-process tests) they record nothing.
//!
//! This crate owns no message state and does no I/O of its own beyond the exporters.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::Sampler;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use opentelemetry::KeyValue;
pub use opentelemetry::metrics::Counter;
pub use opentelemetry::metrics::Histogram;
pub use opentelemetry::metrics::Meter;
pub use opentelemetry::metrics::UpDownCounter;

/// The instrumentation scope of every Parley instrument and span.
pub const SCOPE: &str = "parley";

/// What a node tells its telemetry about itself, and where traces go.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    pub node: u64,
    /// `edge,owner`, `meta`, or `dev`.
    pub roles: String,
    pub region: Option<String>,
    /// `text` or `json` logs.
    pub log_format: String,
    /// The OTLP gRPC endpoint (`http://collector:4317`). Without it, and without the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variables, nothing is exported over OTLP.
    pub otlp_endpoint: Option<String>,
    /// The share of messages traced (parent-based: a message keeps its sender's decision).
    /// `OTEL_TRACES_SAMPLER` wins over it when set.
    pub sample_ratio: f64,
}

/// The installed providers; [`Telemetry::shutdown`] flushes what is still buffered.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: SdkMeterProvider,
    registry: prometheus::Registry,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("trace sample ratio {0} is not between 0 and 1")]
    SampleRatio(f64),
    #[error("cannot set up the {what} exporter: {message}")]
    Exporter { what: &'static str, message: String },
}

fn exporter_error(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> TelemetryError {
    move |error| TelemetryError::Exporter {
        what,
        message: error.to_string(),
    }
}

/// Whether OTLP export is asked for, by flag or by the standard variables.
fn otlp_wanted(config: &TelemetryConfig, signal: &str) -> bool {
    config.otlp_endpoint.is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os(format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")).is_some()
}

impl Telemetry {
    /// Installs logging, tracing and metrics for the process. Must run inside a tokio runtime
    /// (the OTLP exporters' connections live on it).
    pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
        if !(0.0..=1.0).contains(&config.sample_ratio) {
            return Err(TelemetryError::SampleRatio(config.sample_ratio));
        }
        let resource = resource(config);
        let tracer_provider = if otlp_wanted(config, "TRACES") {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if let Some(endpoint) = &config.otlp_endpoint {
                exporter = exporter.with_endpoint(endpoint);
            }
            let exporter = exporter
                .build()
                .map_err(|error| exporter_error("trace")(&error))?;
            let mut provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.clone());
            // The SDK reads OTEL_TRACES_SAMPLER itself; the flag applies when it is not set.
            if std::env::var_os("OTEL_TRACES_SAMPLER").is_none() {
                provider = provider.with_sampler(Sampler::ParentBased(Box::new(
                    Sampler::TraceIdRatioBased(config.sample_ratio),
                )));
            }
            Some(provider.build())
        } else {
            None
        };

        let registry = prometheus::Registry::new();
        let prometheus_reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .map_err(|error| exporter_error("prometheus")(&error))?;
        let mut meters = SdkMeterProvider::builder()
            .with_reader(prometheus_reader)
            .with_resource(resource);
        if otlp_wanted(config, "METRICS") {
            let mut exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic();
            if let Some(endpoint) = &config.otlp_endpoint {
                exporter = exporter.with_endpoint(endpoint);
            }
            let exporter = exporter
                .build()
                .map_err(|error| exporter_error("metric")(&error))?;
            meters = meters.with_periodic_exporter(exporter);
        }
        let meter_provider = meters.build();
        opentelemetry::global::set_meter_provider(meter_provider.clone());

        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let logs = if config.log_format == "json" {
            logs.json().with_filter(filter).boxed()
        } else {
            logs.with_filter(filter).boxed()
        };
        // Only Parley's own spans (the message path) and events go out, whatever RUST_LOG says.
        // A static filter: other crates' callsites stay disabled once and for all, where a
        // filter function would be asked at every event of the delivery path (14 % more CPU in
        // a fan-out benchmark).
        let spans = tracer_provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SCOPE))
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target("parley", tracing::Level::INFO),
                )
        });
        tracing_subscriber::registry().with(logs).with(spans).init();
        Ok(Telemetry {
            tracer_provider,
            meter_provider,
            registry,
        })
    }

    /// Every metric in the Prometheus text format (what `/metrics` answers).
    pub fn prometheus_text(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|error| format!("# cannot encode metrics: {error}\n"))
    }

    /// Exports what is buffered (spans, metrics) and stops the exporters.
    pub fn shutdown(&self) {
        if let Some(provider) = &self.tracer_provider {
            let _ = provider.force_flush();
            let _ = provider.shutdown_with_timeout(Duration::from_secs(2));
        }
        let _ = self.meter_provider.force_flush();
        let _ = self
            .meter_provider
            .shutdown_with_timeout(Duration::from_secs(2));
    }
}

fn resource(config: &TelemetryConfig) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.instance.id", config.node.to_string()),
        KeyValue::new("parley.node.id", config.node as i64),
        KeyValue::new("parley.roles", config.roles.clone()),
    ];
    if let Some(region) = &config.region {
        attributes.push(KeyValue::new("cloud.region", region.clone()));
    }
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the builder and win.
    let mut builder = Resource::builder().with_attributes(attributes);
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        builder = builder.with_service_name("parley");
    }
    builder.build()
}

/// The meter every Parley instrument is made from.
pub fn meter() -> Meter {
    opentelemetry::global::meter(SCOPE)
}

/// The W3C `traceparent` of `span` when it is sampled: what a message carries to the next node.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_sampled() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span a message's `traceparent` names (another node's). A
/// malformed value leaves `span` a root.
pub fn follow(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Instruments of the clients every role shares (Redis, Kafka), named by the OpenTelemetry
/// semantic conventions for database and messaging clients.
struct ClientMetrics {
    store_duration: Histogram<f64>,
    store_errors: Counter<u64>,
    kafka_duration: Histogram<f64>,
    kafka_errors: Counter<u64>,
}

static CLIENT_METRICS: std::sync::LazyLock<ClientMetrics> = std::sync::LazyLock::new(|| {
    let meter = meter();
    let seconds = vec![
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
    ];
    ClientMetrics {
        store_duration: meter
            .f64_histogram("db.client.operation.duration")
            .with_description("Duration of Redis calls")
            .with_unit("s")
            .with_boundaries(seconds.clone())
            .build(),
        store_errors: meter
            .u64_counter("parley.store.errors")
            .with_description("Redis calls that failed, by reason")
            .with_unit("{error}")
            .build(),
        kafka_duration: meter
            .f64_histogram("messaging.client.operation.duration")
            .with_description("From handing a record to the Kafka producer to the broker's ack")
            .with_unit("s")
            .with_boundaries(seconds)
            .build(),
        kafka_errors: meter
            .u64_counter("parley.kafka.errors")
            .with_description("Kafka records that could not be produced or consumed, by component")
            .with_unit("{error}")
            .build(),
    }
});

/// One Redis call: how long it took, and why it failed (`None`: it did not).
pub fn store_call(started: std::time::Instant, failure: Option<&'static str>) {
    let metrics = &*CLIENT_METRICS;
    metrics.store_duration.record(
        started.elapsed().as_secs_f64(),
        &[KeyValue::new("db.system.name", "redis")],
    );
    if let Some(reason) = failure {
        metrics
            .store_errors
            .add(1, &[KeyValue::new("reason", reason)]);
    }
}

/// One record produced to Kafka by `component` (`events`, `bridge`), acknowledged or not.
pub fn kafka_produced(component: &'static str, started: std::time::Instant, ok: bool) {
    let metrics = &*CLIENT_METRICS;
    metrics.kafka_duration.record(
        started.elapsed().as_secs_f64(),
        &[
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.name", "send"),
        ],
    );
    if !ok {
        kafka_error(component);
    }
}

/// A Kafka record `component` could not produce or consume.
pub fn kafka_error(component: &'static str) {
    CLIENT_METRICS
        .kafka_errors
        .add(1, &[KeyValue::new("component", component)]);
}
