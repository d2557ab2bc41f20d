//! Traces over OTLP: the `floodgate` process exports to a collector run by
//! the test (a tonic server implementing the OTLP trace service), and the
//! `ShouldRateLimit` span carries the caller's trace as its parent.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_e2e::{ServerProcess, request, rules_dir, user_rules};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::time::Instant;

/// Keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    Some(match value.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_traced_under_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let rules = rules_dir(&[("edge.yaml", user_rules(1).as_str())]);
    let endpoint = format!("http://{collector_addr}");
    let server = ServerProcess::start(
        rules.path(),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Export each batch after 100 ms rather than 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "floodgate-under-test"),
            // New traces are never sampled: only the caller's decides.
            ("FLOODGATE_TRACE_SAMPLING_RATIO", "0"),
        ],
    )
    .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut client = server.client().await;
    let call = |sampled: &str| {
        let mut request = tonic::Request::new(request("edge", &[("user", "tia")]));
        let traceparent = format!("00-{trace_id}-{parent_id}-{sampled}");
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
        request
    };
    client.should_rate_limit(call("01")).await.unwrap();
    // Over the limit: the second span says so.
    client.should_rate_limit(call("01")).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let calls = loop {
        let spans = collector.spans.lock().unwrap().clone();
        let calls: Vec<Span> = spans
            .iter()
            .filter(|s| s.name == "ShouldRateLimit")
            .cloned()
            .collect();
        if calls.len() >= 2 {
            // The inner spans arrived with them, in the same trace.
            for inner in ["rules.match", "store.apply"] {
                let span = spans.iter().find(|s| s.name == inner).unwrap();
                assert_eq!(hex(&span.trace_id), trace_id, "{inner}");
                assert!(
                    calls.iter().any(|c| c.span_id == span.parent_span_id),
                    "{inner} is inside a ShouldRateLimit span"
                );
            }
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "no ShouldRateLimit spans at the collector: {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for span in &calls {
        assert_eq!(hex(&span.trace_id), trace_id, "the caller's trace");
        assert_eq!(
            hex(&span.parent_span_id),
            parent_id,
            "the caller's span is the parent"
        );
        assert_eq!(attribute(span, "domain").as_deref(), Some("edge"));
        assert_eq!(attribute(span, "descriptors").as_deref(), Some("1"));
        assert_eq!(attribute(span, "degraded").as_deref(), Some("false"));
    }
    let mut decisions: Vec<_> = calls
        .iter()
        .filter_map(|s| attribute(s, "decision"))
        .collect();
    decisions.sort();
    assert_eq!(decisions, ["OK", "OVER_LIMIT"]);

    // A caller's unsampled trace (and, at ratio 0, a call without one) is
    // not exported.
    let before = collector.spans.lock().unwrap().len();
    client.should_rate_limit(call("00")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = collector.spans.lock().unwrap().len();
    assert_eq!(after, before, "nothing exported for an unsampled trace");
}
