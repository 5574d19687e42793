//! Pure dataflow operators over timely/differential, and the aliases that keep their types short.

pub mod aggregate;
pub mod by_key;
pub mod decode;
pub mod expr;
pub mod lineage;
pub mod relation;
mod row_table;
pub mod table;
pub mod upsert;
pub mod window;

/// An epoch: totally ordered logical time.
pub type Time = u64;
/// Multiplicity change of a record.
pub type Diff = i64;
/// A timely scope whose time is an epoch.
pub type Scope<'s> = timely::dataflow::Scope<'s, Time>;
/// A timely stream of `D` records.
pub type Stream<'s, D> = timely::dataflow::StreamVec<'s, Time, D>;
/// A differential collection of `D`, with `i64` diffs unless told otherwise.
pub type Collection<'s, D, R = Diff> = differential_dataflow::VecCollection<'s, Time, D, R>;

/// Per-epoch buffers of an operator that acts once the frontier passes an epoch: the
/// capability to emit at that epoch, and the records received for it.
pub type PendingEpochs<D> =
    std::collections::BTreeMap<Time, (timely::dataflow::operators::Capability<Time>, Vec<D>)>;

/// Fast 64-bit hash used to route records to workers (same on every worker of a build).
pub fn route_hash<H: std::hash::Hash + ?Sized>(value: &H) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(value)
}

#[cfg(test)]
mod oracle_tests;
