//! Changes by key, without state: per epoch and key, the key's last event (by source position)
//! becomes a retraction of whatever the key held, as a row holding only the key, and for a
//! create, update or read also the new row. This is what a sink that deletes by key (Iceberg
//! equality deletes) needs, in memory that does not grow with the table. What needs the
//! previous row becomes a dead letter that says so: a truncate (the rows to delete are not
//! known) and an update whose unchanged TOASTed values the source did not send.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use differential_dataflow::AsCollection;

use super::upsert::has_unavailable_values;
use super::{route_hash, Collection, PendingEpochs};
use crate::event::{ChangeEvent, DeadLetter, DeadLetterKind, Op};
use crate::row::{Key, Row};
use crate::value::Value;

/// See the module docs. `stamped` makes the row written for an event from its `after` (or,
/// for a retraction, from a row of nulls holding only the key, `width` columns wide).
pub fn keyed_changes<'s>(
    events: Collection<'s, ChangeEvent>,
    name: &str,
    key_columns: Vec<usize>,
    width: usize,
    stamped: impl Fn(&ChangeEvent, Row) -> Row + 'static,
) -> (Collection<'s, Row>, Collection<'s, DeadLetter>) {
    let stage: Arc<str> = Arc::from(name);
    let needs_state = move |event: &ChangeEvent, reason: String| DeadLetter {
        stage: Arc::clone(&stage),
        kind: DeadLetterKind::NeedsState,
        reason,
        position: Some(event.position),
        raw: Arc::from(""),
    };
    let letters = events.clone().flat_map(move |event| {
        let reason = if event.op == Op::Truncate {
            "a truncate cannot be applied without the table's rows in memory (equality deletes \
             delete by key): the Iceberg table keeps its rows; empty it there, or replicate with \
             position deletes"
        } else if has_unavailable_values(&event) {
            "an unchanged TOASTed value was not sent and there is no previous row to take it \
             from (equality deletes keep no rows): the update is not applied; set REPLICA \
             IDENTITY FULL on the source table, or replicate with position deletes"
        } else {
            return None;
        };
        Some(needs_state(&event, reason.to_owned()))
    });
    let rows = events
        .inner
        .unary_frontier(
            Exchange::new(|(event, _, _): &(ChangeEvent, _, _)| route_hash(&event.key)),
            name,
            move |_capability, _info| {
                let mut pending: PendingEpochs<ChangeEvent> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        let Some(&time) = capability.least() else {
                            return;
                        };
                        let entry = pending
                            .entry(time)
                            .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()));
                        entry
                            .1
                            .extend(data.drain(..).filter_map(|(event, _, diff)| {
                                let applies = diff > 0
                                    && event.op != Op::Truncate
                                    && !has_unavailable_values(&event);
                                applies.then_some(event)
                            }));
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, (capability, events)) = entry.remove_entry();
                        let mut last: HashMap<Key, ChangeEvent> = HashMap::new();
                        for event in events {
                            match last.entry(event.key.clone()) {
                                Entry::Occupied(mut held) => {
                                    if held.get().position < event.position {
                                        held.insert(event);
                                    }
                                }
                                Entry::Vacant(slot) => {
                                    slot.insert(event);
                                }
                            }
                        }
                        let mut session = output.session(&capability);
                        for (key, mut event) in last {
                            let mut values = vec![Value::Null; width];
                            for (&column, value) in key_columns.iter().zip(key.iter()) {
                                if let Some(slot) = values.get_mut(column) {
                                    *slot = value.clone();
                                }
                            }
                            session.give((stamped(&event, Row::new(values)), time, -1));
                            let upsert = matches!(event.op, Op::Create | Op::Update | Op::Read);
                            if let (true, Some(after)) = (upsert, event.after.take()) {
                                session.give((stamped(&event, after), time, 1));
                            }
                        }
                    }
                }
            },
        )
        .as_collection();
    (rows, letters)
}
