//! The metrics endpoint: `GET /metrics` answers the registry in the Prometheus text format
//! (0.0.4), served by hyper (HTTP/1.1) on the stream's own tokio runtime. Any other path is a
//! 404 that says where the metrics are.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::prometheus_text::CONTENT_TYPE as PROMETHEUS_TEXT, registry::Registry,
};
use tokio::net::TcpListener;

use super::exposition;

/// The path the metrics are served at.
pub const METRICS_PATH: &str = "/metrics";

/// How long a client may take to send its request headers before its connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `registry` to every connection `listener` accepts, each on a task of its own,
/// until the future is dropped (the connections' tasks end with their clients).
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of fds, say: the next accept may work; never spin on it.
                tracing::warn!("metrics: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(answer(&request, &registry)) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("metrics: a connection ended: {e}");
            }
        });
    }
}

/// The answer to one request.
fn answer(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let response = Response::builder();
    let response = if request.uri().path() != METRICS_PATH {
        response
            .status(StatusCode::NOT_FOUND)
            .body(Full::from(format!(
                "busyprobe: the metrics are at {METRICS_PATH}\n"
            )))
    } else if !matches!(*request.method(), Method::GET | Method::HEAD) {
        response
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(ALLOW, "GET, HEAD")
            .body(Full::default())
    } else {
        response
            .header(CONTENT_TYPE, PROMETHEUS_TEXT)
            .body(Full::from(exposition(registry)))
    };
    response.expect("a response of constant parts is well formed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    /// Serves a registry with one counter at 3 on a free loopback port, on a runtime of its
    /// own; returns the address.
    fn served() -> std::net::SocketAddr {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        counter.inc_by(3);
        registry.register("busyprobe_test", "A test counter", counter);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    // Inside the runtime: tokio's listener registers with its reactor.
                    let listener = TcpListener::from_std(listener).unwrap();
                    serve(listener, Arc::new(registry)).await
                })
        });
        addr
    }

    #[test]
    fn serves_the_text_format_at_metrics_and_404_elsewhere() {
        let addr = served();
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build(),
        );
        let mut metrics = agent.get(format!("http://{addr}/metrics")).call().unwrap();
        assert_eq!(metrics.status(), 200);
        assert_eq!(
            metrics.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let body = metrics.body_mut().read_to_string().unwrap();
        assert_eq!(
            body,
            "# HELP busyprobe_test_total A test counter.\n\
             # TYPE busyprobe_test_total counter\n\
             busyprobe_test_total 3\n"
        );
        let mut elsewhere = agent.get(format!("http://{addr}/")).call().unwrap();
        assert_eq!(elsewhere.status(), 404);
        assert!(elsewhere
            .body_mut()
            .read_to_string()
            .unwrap()
            .contains("/metrics"));
        let post = agent
            .post(format!("http://{addr}/metrics"))
            .send_empty()
            .unwrap();
        assert_eq!(post.status(), 405);
    }
}
