//! The contract every sink builds on (`on_closed_epochs`): an epoch is handed over only once
//! every worker is done with it — exactly once, complete and consolidated, in epoch order — and
//! the probe is done only after every write returned. Checked with 1 and 3 workers feeding at
//! different paces.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::AsCollection;
use timely::dataflow::operators::Input;
use timely::dataflow::ProbeHandle;
use tributary_engine::sinks::on_closed_epochs;
use tributary_operators::dataflow::Time;

/// What the sink was handed: (epoch, consolidated updates), in call order.
type Handed = Vec<(Time, Vec<(u64, i64)>)>;
/// What was sent: epoch → record → net diff.
type Sent = BTreeMap<Time, BTreeMap<u64, i64>>;

fn run(workers: usize) -> (Handed, Sent) {
    let writes: Arc<Mutex<Handed>> = Arc::default();
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let (sink, expected) = (Arc::clone(&writes), Arc::clone(&sent));
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index() as u64;
        let probe = ProbeHandle::new();
        let sink = Arc::clone(&sink);
        let mut input = worker.dataflow::<Time, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<(u64, Time, i64)>>();
            let sink = Arc::clone(&sink);
            // Handed over early, an epoch would arrive incomplete and then a second time: the
            // checks below ("once", "complete") catch that.
            on_closed_epochs(
                &stream.as_collection(),
                "contract",
                &probe,
                move |epoch, updates| {
                    sink.lock().unwrap().push((epoch, updates));
                },
            );
            input
        });
        for epoch in 0..6u64 {
            input.advance_to(epoch);
            for i in 0..20u64 {
                let record = (i * 7 + index) % 11;
                // +1 twice and -1 once: the sink must see the consolidated +1.
                for diff in [1, 1, -1] {
                    input.send((record, epoch, diff));
                }
                *expected
                    .lock()
                    .unwrap()
                    .entry(epoch)
                    .or_default()
                    .entry(record)
                    .or_default() += 1;
            }
            // Worker 0 races ahead; the others step in between, so epochs close unevenly.
            if index != 0 {
                worker.step();
            }
        }
        drop(input);
        while !probe.done() {
            worker.step();
        }
        // When the probe is done, every write has returned.
        assert!(!sink.lock().unwrap().is_empty());
    })
    .unwrap();
    let writes = writes.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    (writes, sent)
}

#[test]
fn epochs_are_handed_over_once_complete_consolidated_and_in_order() {
    for workers in [1, 3] {
        let (writes, sent) = run(workers);
        let epochs: Vec<Time> = writes.iter().map(|(e, _)| *e).collect();
        let mut sorted = epochs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(epochs, sorted, "in order, each once (workers={workers})");
        for (epoch, updates) in &writes {
            let mut got: BTreeMap<u64, i64> = BTreeMap::new();
            for (record, diff) in updates {
                assert!(
                    got.insert(*record, *diff).is_none(),
                    "consolidated: one update per record"
                );
            }
            let want: BTreeMap<u64, i64> = sent[epoch]
                .iter()
                .map(|(r, d)| (*r, *d))
                .filter(|(_, d)| *d != 0)
                .collect();
            assert_eq!(got, want, "epoch {epoch} complete (workers={workers})");
        }
        assert_eq!(
            epochs,
            sent.keys().copied().collect::<Vec<_>>(),
            "no epoch missing"
        );
    }
}
