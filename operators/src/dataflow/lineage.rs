//! Which columns of each source table a pipeline reads (projection pushdown). A relation knows,
//! per column, the source-table column it carries ([`Origin`]); an operator marks the columns
//! it reads, a sink marks all of its input's, and once the pipeline is built the decoder
//! converts only the marked columns of each table and leaves the others NULL.

use std::cell::RefCell;
use std::rc::Rc;

/// The columns of one source table that something in the pipeline reads; shared by every
/// relation derived from the table. The primary key is always read.
#[derive(Clone, Debug)]
pub struct ColumnsRead(Rc<RefCell<Vec<bool>>>);

impl ColumnsRead {
    /// A table of `width` columns of which only `always` (its key) is read so far.
    pub fn new(width: usize, always: &[usize]) -> Self {
        let mut read = vec![false; width];
        for &column in always {
            if let Some(flag) = read.get_mut(column) {
                *flag = true;
            }
        }
        ColumnsRead(Rc::new(RefCell::new(read)))
    }

    fn mark(&self, column: usize) {
        if let Some(flag) = self.0.borrow_mut().get_mut(column) {
            *flag = true;
        }
    }

    /// Whether the column is read.
    pub fn is_read(&self, column: usize) -> bool {
        self.0.borrow().get(column).copied().unwrap_or(false)
    }

    /// The columns read, in order; `None` when every column is.
    pub fn projection(&self) -> Option<Vec<usize>> {
        let read = self.0.borrow();
        (!read.iter().all(|&r| r)).then(|| (0..read.len()).filter(|&column| read[column]).collect())
    }

    /// Each column's origin, for a relation whose columns are the table's in order.
    pub fn origins(&self) -> impl Iterator<Item = Option<Origin>> + '_ {
        let width = self.0.borrow().len();
        (0..width).map(|column| {
            Some(Origin {
                table: self.clone(),
                column,
            })
        })
    }
}

/// The source-table column a relation's column carries unchanged.
#[derive(Clone, Debug)]
pub struct Origin {
    table: ColumnsRead,
    column: usize,
}

impl Origin {
    /// Something reads this column: the decoder must convert it.
    pub fn mark_read(&self) {
        self.table.mark(self.column);
    }

    /// Whether anything reads it (final once the pipeline is built).
    pub fn is_read(&self) -> bool {
        self.table.is_read(self.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_read_and_marks_are_shared() {
        let read = ColumnsRead::new(4, &[0]);
        assert_eq!(read.projection(), Some(vec![0]));
        let origins: Vec<_> = read.origins().collect();
        origins[2].as_ref().map(Origin::mark_read);
        assert!(read.is_read(2) && !read.is_read(1));
        assert_eq!(read.projection(), Some(vec![0, 2]));
        for origin in origins.iter().flatten() {
            origin.mark_read();
        }
        assert_eq!(read.projection(), None);
    }
}
