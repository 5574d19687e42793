//! `--metrics-addr`: a minimal HTTP endpoint serving the run's metrics in Prometheus text format
//! at `/metrics` (any other path is 404).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Metrics;

/// Binds `addr` and serves `/metrics` from a background thread for the life of the process.
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    pipeline: &str,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let pipeline = pipeline.to_owned();
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(error) = respond(stream, &metrics, &pipeline) {
                    tracing::debug!(%error, "metrics request failed");
                }
            }
        })?;
    tracing::info!(addr = %bound, "serving Prometheus metrics at /metrics");
    Ok(bound)
}

fn respond(stream: TcpStream, metrics: &Metrics, pipeline: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, content_type, body) = if path == "/metrics" || path.starts_with("/metrics?") {
        (
            "200 OK",
            "text/plain; version=0.0.4",
            render(metrics, pipeline),
        )
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The Prometheus text exposition of `metrics`.
pub fn render(metrics: &Metrics, pipeline: &str) -> String {
    let mut out = String::new();
    let label = format!("pipeline=\"{}\"", escape(pipeline));
    let counter = |out: &mut String, name: &str, help: &str, samples: &[(String, f64)]| {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{label}{labels}}} {value}");
        }
    };
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
    counter(
        &mut out,
        "tributary_records_in_total",
        "Records read from the source.",
        &[(String::new(), get(&metrics.records_in))],
    );
    let per_table: Vec<(String, f64)> = metrics
        .decode
        .events_by_table()
        .into_iter()
        .map(|(table, n)| (format!(",table=\"{}\"", escape(&table)), n as f64))
        .collect();
    counter(
        &mut out,
        "tributary_events_total",
        "Change events decoded, by table (tombstones excluded).",
        &per_table,
    );
    counter(
        &mut out,
        "tributary_tombstones_total",
        "Tombstones seen.",
        &[(String::new(), get(&metrics.decode.tombstones))],
    );
    counter(
        &mut out,
        "tributary_skipped_events_total",
        "Events of tables the pipeline does not read.",
        &[(String::new(), get(&metrics.decode.skipped))],
    );
    let dead: Vec<(String, f64)> = metrics
        .dead_letters()
        .into_iter()
        .map(|(kind, n)| (format!(",reason=\"{kind}\""), n as f64))
        .collect();
    counter(
        &mut out,
        "tributary_dead_letters_total",
        "Dead letters, by reason.",
        &dead,
    );
    let outputs: Vec<(String, f64)> = metrics
        .outputs()
        .into_iter()
        .map(|(output, n)| (format!(",output=\"{}\"", escape(&output)), n as f64))
        .collect();
    counter(
        &mut out,
        "tributary_output_rows_total",
        "Changed rows written, by output.",
        &outputs,
    );
    counter(
        &mut out,
        "tributary_epochs_closed_total",
        "Epochs closed by the source.",
        &[(String::new(), get(&metrics.epochs_closed))],
    );
    counter(
        &mut out,
        "tributary_epochs_done_total",
        "Epochs handled by every sink.",
        &[(String::new(), get(&metrics.epochs_done))],
    );
    for (name, help, value) in [
        (
            "tributary_iceberg_commits_total",
            "Iceberg snapshots committed.",
            &metrics.iceberg_commits,
        ),
        (
            "tributary_iceberg_rows_written_total",
            "Rows appended to Iceberg tables.",
            &metrics.iceberg_rows_written,
        ),
        (
            "tributary_iceberg_rows_deleted_total",
            "Rows deleted by position from Iceberg tables.",
            &metrics.iceberg_rows_deleted,
        ),
        (
            "tributary_iceberg_busy_microseconds_total",
            "Time Iceberg sinks spent encoding rows and committing.",
            &metrics.iceberg_busy_us,
        ),
        (
            "tributary_iceberg_snapshots_expired_total",
            "Snapshots Iceberg maintenance expired.",
            &metrics.iceberg_snapshots_expired,
        ),
        (
            "tributary_iceberg_files_deleted_total",
            "Files Iceberg maintenance deleted (of expired snapshots, old metadata, orphans).",
            &metrics.iceberg_files_deleted,
        ),
        (
            "tributary_iceberg_files_compacted_total",
            "Data and delete files compaction rewrote.",
            &metrics.iceberg_files_compacted,
        ),
    ] {
        counter(&mut out, name, help, &[(String::new(), get(value))]);
    }
    counter(
        &mut out,
        "tributary_frontier_lag_seconds",
        "Seconds since the last epoch was handled by every sink.",
        &[(String::new(), metrics.frontier_lag_seconds())],
    );
    let state = metrics.state_sizes();
    counter(
        &mut out,
        "tributary_state_rows",
        "Rows of current state held by upsert operators.",
        &[(
            String::new(),
            state.values().map(|(rows, _)| *rows as f64).sum(),
        )],
    );
    let by_table: Vec<(String, f64)> = state
        .iter()
        .map(|(table, (_, bytes))| (format!(",table=\"{}\"", escape(table)), *bytes as f64))
        .collect();
    counter(
        &mut out,
        "tributary_state_bytes",
        "About how many bytes a table's current state takes in memory (rows and their slots).",
        &by_table,
    );
    for (name, help, histogram) in [
        (
            "tributary_epoch_commit_latency_seconds",
            "Time from an epoch's close until every sink has handled it.",
            metrics.epoch_latency(),
        ),
        (
            "tributary_iceberg_commit_seconds",
            "Time of one Iceberg commit (one table's snapshot).",
            metrics.iceberg_commit_latency.read(),
        ),
    ] {
        let (buckets, count, sum) = histogram;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, n) in buckets {
            let _ = writeln!(out, "{name}_bucket{{{label},le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{label},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{label}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{label}}} {count}");
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.records_in.store(5, Ordering::Relaxed);
        metrics.epoch_done(Duration::from_millis(30));
        metrics.dead_letter(tributary_operators::DeadLetterKind::BadJson);
        let orders = metrics.state_of("dbserver1.public.orders");
        orders.rows.store(2, Ordering::Relaxed);
        orders.bytes.store(300, Ordering::Relaxed);
        metrics
            .state_of("dbserver1.public.items")
            .rows
            .store(1, Ordering::Relaxed);
        let text = render(&metrics, "op-counts");
        assert!(text.contains("tributary_state_rows{pipeline=\"op-counts\"} 3"));
        assert!(text.contains(
            "tributary_state_bytes{pipeline=\"op-counts\",table=\"dbserver1.public.orders\"} 300"
        ));
        assert!(text.contains("tributary_records_in_total{pipeline=\"op-counts\"} 5"));
        assert!(text.contains(
            "tributary_dead_letters_total{pipeline=\"op-counts\",reason=\"bad-json\"} 1"
        ));
        assert!(text.contains(
            "tributary_epoch_commit_latency_seconds_bucket{pipeline=\"op-counts\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "tributary_epoch_commit_latency_seconds_bucket{pipeline=\"op-counts\",le=\"0.025\"} 0"
        ));
    }
}
