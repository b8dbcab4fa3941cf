//! Logs to stderr (text or one JSON object per line) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, traces over OTLP/HTTP (protobuf).
//!
//! Use-case and database spans (target [`TRACE_TARGET`]) exist only for the trace
//! exporter: the log layer turns them off, so without an endpoint no layer wants them and
//! tracing skips them at the call site, at no cost to the purchase path.

use crate::config::{Config, LogFormat};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The target of the use-case and database spans (`coalition_app`'s `trace` spans).
pub const TRACE_TARGET: &str = "coalition::trace";
/// What is exported as traces: requests, use cases, database calls, and warnings and
/// errors logged inside them (as span events).
const TRACE_FILTER: &str = "warn,coalition::request=info,coalition::trace=info";

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Flushes the traces still buffered when the process ends.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(traces) = self.traces {
            if let Err(e) = traces.shutdown() {
                eprintln!("flushing traces: {e}");
            }
        }
    }
}

/// Sets up logging (and tracing when configured) for the whole process.
pub fn init(config: &Config) -> Result<Telemetry, String> {
    let filter = format!("{},{TRACE_TARGET}=off", config.log_filter);
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let mut layers: Vec<BoxedLayer> = vec![log_layer(config.log_format, filter)];
    let traces = match &config.otlp_endpoint {
        Some(endpoint) => {
            let provider = tracer_provider(endpoint)?;
            let tracer = provider.tracer("coalition");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(EnvFilter::new(TRACE_FILTER));
            layers.push(Box::new(layer));
            Some(provider)
        }
        None => None,
    };
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(Telemetry { traces })
}

/// Colours only for a person at a terminal: a log collector gets plain lines.
fn log_layer(format: LogFormat, filter: EnvFilter) -> BoxedLayer {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => Box::new(layer.with_filter(filter)),
        LogFormat::Json => Box::new(
            layer
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter(filter),
        ),
    }
}

/// Spans batched and posted to `<endpoint>/v1/traces` (the batch's timing follows the
/// standard `OTEL_BSP_*` variables).
fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("coalition");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
