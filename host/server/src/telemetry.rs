//! Logs (text or JSON on stderr), spans exported over OTLP/HTTP when an
//! endpoint is configured, and the Prometheus recorder behind /metrics
//! (wrapped so that the console's metrics ring sees the same calls).

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::config::ServerConfig;
use super::metrics_ring::RingRecorder;

/// Latency buckets (seconds): 50 µs to 5 s, for the request and stage histograms.
const LATENCY_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Telemetry that must be flushed at shutdown.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Renders the Prometheus text of /metrics.
    pub metrics: PrometheusHandle,
}

/// The OTLP/HTTP traces URL of a collector base URL.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") }
}

/// Installs the subscriber, the OTLP exporter (if configured) and the metrics recorder.
pub fn init(config: &ServerConfig) -> anyhow::Result<Telemetry> {
    // The exporter's own HTTP client must not trace itself into a loop.
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info"))
            .add_directive("hyper=warn".parse().expect("valid directive"))
            .add_directive("reqwest=warn".parse().expect("valid directive"))
            .add_directive("opentelemetry=warn".parse().expect("valid directive"))
    };
    let provider = if config.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(&config.otlp_endpoint))
            .build()
            .context("cannot build the OTLP exporter (check otlp_endpoint)")?;
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name("edgerec").build())
                .build(),
        )
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("edgerec")).with_filter(filter()));
    let fmt = if config.log_format == "json" {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_filter(filter()).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter()).boxed()
    };
    tracing_subscriber::registry().with(fmt).with(otel).try_init().context("cannot install the log subscriber")?;
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .context("latency buckets")?
        .build_recorder();
    let metrics = recorder.handle();
    // The console's charts read the same calls from the in-memory ring.
    metrics::set_global_recorder(RingRecorder::new(recorder)).context("cannot install the metrics recorder")?;
    Ok(Telemetry { provider, metrics })
}

impl Telemetry {
    /// Flushes and stops the span exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: flushing the OTLP exporter failed: {error}");
        }
    }
}
