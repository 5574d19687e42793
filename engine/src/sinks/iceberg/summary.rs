//! A snapshot summary's counts as Java writes them: what the snapshot added and removed
//! (`added-*`, `deleted-*`, `removed-*`) and the table's totals after it (`total-*`, carried
//! from the parent).

use std::collections::HashMap;

use iceberg::spec::{DataContentType, DataFile};

/// Counts of files of one side of a commit (added or removed).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tally {
    data_files: u64,
    position_delete_files: u64,
    equality_delete_files: u64,
    records: u64,
    position_deletes: u64,
    equality_deletes: u64,
    files_size: u64,
}

impl Tally {
    /// Counts `file`.
    pub(super) fn count(&mut self, file: &DataFile) {
        self.files_size += file.file_size_in_bytes();
        match file.content_type() {
            DataContentType::Data => {
                self.data_files += 1;
                self.records += file.record_count();
            }
            DataContentType::PositionDeletes => {
                self.position_delete_files += 1;
                self.position_deletes += file.record_count();
            }
            DataContentType::EqualityDeletes => {
                self.equality_delete_files += 1;
                self.equality_deletes += file.record_count();
            }
        }
    }

    /// Delete files counted.
    pub(super) fn delete_files(&self) -> u64 {
        self.position_delete_files + self.equality_delete_files
    }
}

/// The summary of a snapshot that adds `added` and removes `removed` after `parent`'s.
pub(super) fn summary(
    parent: Option<&HashMap<String, String>>,
    added: &Tally,
    removed: &Tally,
) -> HashMap<String, String> {
    let previous = |key: &str| -> u64 {
        parent
            .and_then(|p| p.get(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut summary = HashMap::new();
    let mut put = |key: &str, value: u64| {
        summary.insert(key.to_owned(), value.to_string());
    };
    let sides = [
        (
            "data-files",
            added.data_files,
            "deleted-data-files",
            removed.data_files,
        ),
        (
            "delete-files",
            added.delete_files(),
            "removed-delete-files",
            removed.delete_files(),
        ),
        (
            "position-delete-files",
            added.position_delete_files,
            "removed-position-delete-files",
            removed.position_delete_files,
        ),
        (
            "equality-delete-files",
            added.equality_delete_files,
            "removed-equality-delete-files",
            removed.equality_delete_files,
        ),
        ("records", added.records, "deleted-records", removed.records),
        (
            "files-size",
            added.files_size,
            "removed-files-size",
            removed.files_size,
        ),
        (
            "position-deletes",
            added.position_deletes,
            "removed-position-deletes",
            removed.position_deletes,
        ),
        (
            "equality-deletes",
            added.equality_deletes,
            "removed-equality-deletes",
            removed.equality_deletes,
        ),
    ];
    for (name, plus, removed_key, minus) in sides {
        put(&format!("added-{name}"), plus);
        if minus > 0 {
            put(removed_key, minus);
        }
        if !name.ends_with("-delete-files") {
            let total = format!("total-{name}");
            put(&total, (previous(&total) + plus).saturating_sub(minus));
        }
    }
    summary
}
