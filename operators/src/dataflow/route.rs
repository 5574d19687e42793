//! Routes ingested records into one change-event collection per declared table, plus a
//! dead-letter collection. Tables can be added while the dataflow is being built.

use timely::dataflow::channels::pact::{ParallelizationContract, Pipeline};
use timely::dataflow::channels::pushers::Output;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::InputHandleCore;
use timely::progress::operate::FrontierInterest;

use differential_dataflow::AsCollection;

use super::{Collection, Diff, Stream, Time};
use crate::event::{ChangeEvent, DeadLetter};
use crate::schema::TableId;

/// What a source hands the dataflow: a decoded event or a dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingested {
    /// A change to a declared table.
    Event(ChangeEvent),
    /// A record that failed to decode.
    Dead(DeadLetter),
}

type Update<D> = (D, Time, Diff);
type RoutePuller = <Pipeline as ParallelizationContract<Time, Vec<Ingested>>>::Puller;
type RouteOutput<D> = Output<Time, Vec<Update<D>>>;

/// Builder of the routing operator: call [`TableRouter::table`] for each table, then
/// [`TableRouter::build`].
pub struct TableRouter<'s> {
    builder: OperatorBuilder<'s, Time>,
    input: InputHandleCore<Time, Vec<Ingested>, RoutePuller>,
    dead_output: RouteOutput<DeadLetter>,
    dead: Collection<'s, DeadLetter>,
    tables: Vec<RouteOutput<ChangeEvent>>,
}

impl std::fmt::Debug for TableRouter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableRouter")
            .field("tables", &self.tables.len())
            .finish()
    }
}

impl<'s> TableRouter<'s> {
    /// Starts a router over the ingested stream.
    pub fn new(ingested: Stream<'s, Ingested>, name: &str) -> Self {
        let mut builder = OperatorBuilder::new(name.to_owned(), ingested.scope());
        let input = builder.new_input(ingested, Pipeline);
        builder.set_notify_for(0, FrontierInterest::Never);
        let (dead_output, dead) = builder.new_output();
        TableRouter {
            builder,
            input,
            dead_output,
            dead: dead.as_collection(),
            tables: Vec::new(),
        }
    }

    /// The change events of table `id`; ids must be requested in order 0, 1, 2, …
    pub fn table(&mut self, id: TableId) -> Collection<'s, ChangeEvent> {
        debug_assert_eq!(
            id as usize,
            self.tables.len(),
            "tables are routed in id order"
        );
        let (output, stream) = self.builder.new_output();
        self.tables.push(output);
        stream.as_collection()
    }

    /// Records that failed to decode.
    pub fn dead_letters(&self) -> Collection<'s, DeadLetter> {
        self.dead.clone()
    }

    /// Finishes the operator. Events of tables never requested are dropped (the source should
    /// not produce them).
    pub fn build(self) {
        let TableRouter {
            builder,
            mut input,
            mut dead_output,
            mut tables,
            ..
        } = self;
        builder.build(move |_capabilities| {
            let mut per_table: Vec<Vec<Update<ChangeEvent>>> = Vec::new();
            let mut dead_letters: Vec<Update<DeadLetter>> = Vec::new();
            move |_frontiers| {
                per_table.resize_with(tables.len(), Vec::new);
                input.for_each_stamp(|capability, containers| {
                    let Some(&time) = capability.least() else {
                        return;
                    };
                    for container in containers {
                        for record in container.drain(..) {
                            match record {
                                Ingested::Event(event) => {
                                    if let Some(buffer) = per_table.get_mut(event.table as usize) {
                                        buffer.push((event, time, 1));
                                    }
                                }
                                Ingested::Dead(letter) => dead_letters.push((letter, time, 1)),
                            }
                        }
                    }
                    for (output, buffer) in tables.iter_mut().zip(per_table.iter_mut()) {
                        if !buffer.is_empty() {
                            output.activate().give(&capability, buffer);
                            buffer.clear();
                        }
                    }
                    if !dead_letters.is_empty() {
                        dead_output.activate().give(&capability, &mut dead_letters);
                        dead_letters.clear();
                    }
                });
            }
        });
    }
}
