//! A close in progress: the open epoch closes only once every stream that has records in it has
//! reached a transaction boundary. Records of streams already past their boundary wait (held)
//! for the next epoch; records of streams still inside their transaction join the closing one.

use tributary_operators::debezium::TxRole;
use tributary_operators::RawRecord;

/// Where one stream stands while the epoch closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Open {
    /// At a boundary: its next records belong to the next epoch.
    Complete,
    /// It has records in the epoch, but the transaction of the last one is not known: its next
    /// change event is taken as part of that transaction.
    Unknown,
    /// Inside this transaction: change events of another one end it.
    In(u64),
}

/// What to do with a record of a stream while the epoch closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// It belongs to the closing epoch.
    Emit,
    /// It belongs to the next epoch.
    Hold,
}

/// The per-stream state of one close and the records held for the next epoch.
#[derive(Debug, Default)]
pub(super) struct Closing {
    open: Vec<Open>,
    pending: usize,
    pub(super) held: Vec<RawRecord>,
}

impl Closing {
    /// A close where `open[stream]` says where each stream stands.
    pub(super) fn new(open: Vec<Open>) -> Self {
        let pending = open.iter().filter(|o| **o != Open::Complete).count();
        Closing {
            open,
            pending,
            held: Vec::new(),
        }
    }

    /// True once every stream is at a boundary: the epoch may close.
    pub(super) fn done(&self) -> bool {
        self.pending == 0
    }

    /// Where `stream` stands.
    pub(super) fn open(&self, stream: u32) -> Open {
        self.open
            .get(stream as usize)
            .copied()
            .unwrap_or(Open::Complete)
    }

    /// Routes a record of a stream that is not yet complete, given its role (`Alone` already
    /// read as `Attached` on streams that carry transaction ids).
    pub(super) fn route(&mut self, stream: u32, role: TxRole) -> Route {
        let Some(open) = self.open.get_mut(stream as usize) else {
            return Route::Hold;
        };
        let next = match (*open, role) {
            (Open::Complete, _) => return Route::Hold,
            (_, TxRole::Attached) => return Route::Emit,
            (Open::Unknown, TxRole::In(id)) => Open::In(id),
            (Open::In(current), TxRole::In(id)) if current == id => return Route::Emit,
            // Another transaction, or a change event that is a transaction of its own.
            _ => {
                self.complete(stream);
                return Route::Hold;
            }
        };
        *open = next;
        Route::Emit
    }

    /// Takes `stream` as being at a boundary (it went quiet, or the source says so).
    pub(super) fn complete(&mut self, stream: u32) {
        if let Some(open) = self.open.get_mut(stream as usize) {
            if *open != Open::Complete {
                *open = Open::Complete;
                self.pending -= 1;
            }
        }
    }

    /// Takes every stream as being at a boundary.
    pub(super) fn complete_all(&mut self) {
        self.open.fill(Open::Complete);
        self.pending = 0;
    }

    /// The streams not yet at a boundary.
    pub(super) fn pending_streams(&self) -> impl Iterator<Item = u32> + '_ {
        self.open
            .iter()
            .enumerate()
            .filter(|(_, open)| **open != Open::Complete)
            .map(|(stream, _)| stream as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_completes_at_its_next_transaction() {
        let mut closing = Closing::new(vec![Open::In(7), Open::Unknown, Open::Complete]);
        assert!(!closing.done());
        assert_eq!(closing.route(0, TxRole::Attached), Route::Emit);
        assert_eq!(closing.route(0, TxRole::In(7)), Route::Emit);
        assert_eq!(closing.route(2, TxRole::In(1)), Route::Hold);
        assert_eq!(
            closing.route(1, TxRole::In(3)),
            Route::Emit,
            "taken as the open one"
        );
        assert_eq!(closing.route(1, TxRole::In(3)), Route::Emit);
        assert_eq!(closing.route(0, TxRole::In(8)), Route::Hold);
        assert_eq!(
            closing.route(0, TxRole::Attached),
            Route::Hold,
            "past its boundary"
        );
        assert!(!closing.done());
        assert_eq!(closing.pending_streams().collect::<Vec<_>>(), [1]);
        assert_eq!(closing.route(1, TxRole::Alone), Route::Hold);
        assert!(closing.done());
    }
}
