//! A Prometheus endpoint read the plain way, as the benchmarks read the agent's: a free
//! loopback port to serve it on, `GET /metrics` over TCP, and the values of series in the
//! answer.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// A loopback address whose port was free a moment ago.
pub fn free_loopback() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `GET /metrics`, read to the end: how long it took, and the answer.
pub fn scrape(addr: SocketAddr) -> Result<(Duration, String)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).context("connecting to the metrics")?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let took = started.elapsed();
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!(
            "the metrics answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        );
    }
    Ok((took, String::from_utf8_lossy(&answer).into_owned()))
}

/// The value of one series in a scrape's answer: `series` is its name with its labels as
/// the exposition writes them (`name`, or `name{label="value"}`).
pub fn sample_value(answer: &str, series: &str) -> Result<u64> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {series} in the metrics"))
}

/// The values of the series of `name` by their one label `label`: `name{label="x"} 3` gives
/// `x → 3`.
pub fn values_by_label(answer: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{name}{{{label}=\"");
    answer
        .lines()
        .filter_map(|line| {
            let (value, rest) = line.strip_prefix(&prefix)?.split_once("\"} ")?;
            Some((value.to_string(), rest.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "HTTP/1.1 200 OK\r\n\r\n\
        # TYPE busyprobe_unmount_attempts counter\n\
        busyprobe_unmount_attempts_total{result=\"EBUSY\"} 2\n\
        busyprobe_unmount_attempts_total{result=\"ok\"} 5\n\
        busyprobe_drops_total{cause=\"ringbuf_full\"} 7\n\
        busyprobe_client_lines_lost_total 4\n";

    #[test]
    fn series_are_found_with_and_without_labels() {
        let ebusy = r#"busyprobe_unmount_attempts_total{result="EBUSY"}"#;
        assert_eq!(sample_value(ANSWER, ebusy).unwrap(), 2);
        let lost = "busyprobe_client_lines_lost_total";
        assert_eq!(sample_value(ANSWER, lost).unwrap(), 4);
        assert!(sample_value(ANSWER, "busyprobe_unmount_attempts_total").is_err());
    }

    #[test]
    fn values_are_gathered_by_label() {
        let results = values_by_label(ANSWER, "busyprobe_unmount_attempts_total", "result");
        assert_eq!(
            results,
            BTreeMap::from([("EBUSY".into(), 2), ("ok".into(), 5)])
        );
        let drops = values_by_label(ANSWER, "busyprobe_drops_total", "cause");
        assert_eq!(drops, BTreeMap::from([("ringbuf_full".into(), 7)]));
    }
}
