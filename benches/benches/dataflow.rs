//! Operator throughput in a real (single-worker) dataflow: upsert into current state, a
//! group-by aggregate over that state, and a tumbling event-time window over the changes.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use differential_dataflow::AsCollection;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::ProbeHandle;

use tributary_benches::{orders_catalog, workload_lines};
use tributary_operators::dataflow::{table, Collection, Time};
use tributary_operators::debezium::{decode_with, Decoded, SchemaCache};
use tributary_operators::{
    col, count, sum, ChangeEvent, Position, RawRecord, Row, TableSpec, Window,
};

const EVENTS: u64 = 100_000;
const EPOCHS: u64 = 10;

fn events() -> (Vec<ChangeEvent>, TableSpec) {
    let catalog = orders_catalog();
    let mut cache = SchemaCache::default();
    let events = workload_lines(EVENTS, false)
        .into_iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let raw = RawRecord::line(line.as_bytes(), Position::new(0, i as u64 + 1));
            match decode_with(&raw, &catalog, &mut cache) {
                Decoded::Event(event) => Some(event),
                _ => None,
            }
        })
        .collect();
    let spec = catalog.get(0).map(|s| (**s).clone()).expect("orders table");
    (events, spec)
}

/// Feeds `events` in `EPOCHS` epochs through `build` and waits for the result.
fn run<F>(events: Vec<ChangeEvent>, build: F)
where
    F: for<'s> Fn(Collection<'s, ChangeEvent>) -> Collection<'s, Row> + Send + Sync + 'static,
{
    timely::execute_directly(move |worker| {
        let probe = ProbeHandle::new();
        let mut input = worker.dataflow::<Time, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<(ChangeEvent, Time, i64)>>();
            build(stream.as_collection()).inner.probe_with(&probe);
            input
        });
        let per_epoch = events.len() / EPOCHS as usize + 1;
        for (i, event) in events.into_iter().enumerate() {
            let epoch = (i / per_epoch) as Time;
            if epoch > *input.time() {
                input.advance_to(epoch);
            }
            input.send((event, epoch, 1));
        }
        drop(input);
        while !probe.done() {
            worker.step();
        }
    });
}

fn bench_operators(c: &mut Criterion) {
    let (events, spec) = events();
    let mut group = c.benchmark_group("dataflow");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10);

    let state_spec = spec.clone();
    group.bench_function("upsert", |b| {
        b.iter_batched(
            || events.clone(),
            |events| {
                let spec = state_spec.clone();
                run(events, move |e| {
                    table::state(e, &spec, Rc::default(), "state", Arc::default())
                        .rows()
                        .clone()
                })
            },
            BatchSize::LargeInput,
        )
    });

    let agg_spec = spec.clone();
    group.bench_function("upsert_group_by_status", |b| {
        b.iter_batched(
            || events.clone(),
            |events| {
                let spec = agg_spec.clone();
                run(events, move |e| {
                    table::state(e, &spec, Rc::default(), "state", Arc::default())
                        .group_by(["status"])
                        .and_then(|g| g.agg([count(), sum(col("quantity") * col("price"))]))
                        .map(|r| r.rows().clone())
                        .expect("valid plan")
                })
            },
            BatchSize::LargeInput,
        )
    });

    let window_spec = spec;
    group.bench_function("tumbling_window_counts", |b| {
        b.iter_batched(
            || events.clone(),
            |events| {
                let spec = window_spec.clone();
                run(events, move |e| {
                    let window =
                        Window::tumbling(Duration::from_secs(10)).lateness(Duration::from_secs(5));
                    table::changes(e, &spec, Rc::default())
                        .window("w", "event_time", window)
                        .and_then(|w| w.group_by(["window_start", "op"]))
                        .and_then(|g| g.agg([count(), sum(col("quantity"))]))
                        .map(|r| r.rows().clone())
                        .expect("valid plan")
                })
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_operators);
criterion_main!(benches);
