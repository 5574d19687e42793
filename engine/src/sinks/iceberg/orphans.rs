//! Orphan files: files under a table's `data/` and `metadata/` folders that no snapshot kept,
//! no manifest and no metadata version of the table names (left by a killed or failed commit,
//! or by a writer that expired snapshots without deleting their files). Only files older than
//! a given age are removed, so that a commit in flight keeps its files. Listing needs a local
//! warehouse; object stores are refused with a clear error.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::table::IcebergTable;
use super::IcebergError;

/// What an orphan cleanup found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Orphans {
    /// Files listed under the table.
    pub listed: usize,
    /// Orphans deleted.
    pub deleted: usize,
}

impl IcebergTable {
    /// Deletes the table's files that nothing references and that are older than
    /// `older_than`.
    pub fn remove_orphans(&self, older_than: Duration) -> Result<Orphans, IcebergError> {
        let location = self.metadata.location();
        let Some(root) = location.strip_prefix("file://") else {
            return Err(IcebergError::Config(format!(
                "table {} lives at {location}: orphan files can be listed only in a local \
                 warehouse (on an object store, let a lifecycle rule expire unreferenced files)",
                self.ident
            )));
        };
        let referenced = self.referenced_files()?;
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut found = Orphans::default();
        let mut orphans = Vec::new();
        for folder in ["data", "metadata"] {
            for file in files_under(&Path::new(root).join(folder))? {
                found.listed += 1;
                let path = format!("file://{}", file.display());
                let old = std::fs::metadata(&file)
                    .and_then(|m| m.modified())
                    .is_ok_and(|modified| modified < cutoff);
                if old && !referenced.contains(&path) {
                    orphans.push(path);
                }
            }
        }
        found.deleted = self.delete_files(&orphans);
        if found.deleted > 0 {
            tracing::info!(table = %self.ident, deleted = found.deleted, "deleted orphan files");
        }
        Ok(found)
    }

    /// Every file the table's metadata reaches: metadata versions, statistics files, manifest
    /// lists, manifests and the files they name (in any state).
    fn referenced_files(&self) -> Result<HashSet<String>, IcebergError> {
        let mut referenced: HashSet<String> = HashSet::new();
        referenced.insert(self.metadata_location.clone());
        referenced.extend(
            self.metadata
                .metadata_log()
                .iter()
                .map(|log| log.metadata_file.clone()),
        );
        // Statistics (Puffin) files other engines attach.
        referenced.extend(
            self.metadata
                .statistics_iter()
                .map(|s| s.statistics_path.clone()),
        );
        referenced.extend(
            self.metadata
                .partition_statistics_iter()
                .map(|s| s.statistics_path.clone()),
        );
        self.block_on(async {
            for snapshot in self.metadata.snapshots() {
                referenced.insert(snapshot.manifest_list().to_owned());
                for manifest in self.manifests(snapshot.manifest_list()).await?.entries() {
                    referenced.insert(manifest.manifest_path.clone());
                    for entry in self.entries(manifest).await?.iter() {
                        referenced.insert(entry.file_path().to_owned());
                    }
                }
            }
            Ok::<_, IcebergError>(())
        })?;
        Ok(referenced)
    }
}

/// The files under `folder`, at any depth (none if it does not exist).
fn files_under(folder: &Path) -> Result<Vec<PathBuf>, IcebergError> {
    let mut files = Vec::new();
    let mut folders = vec![folder.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(IcebergError::Io(format!(
                    "listing {}: {e}",
                    folder.display()
                )))
            }
        };
        for entry in entries {
            let entry = entry
                .map_err(|e| IcebergError::Io(format!("listing {}: {e}", folder.display())))?;
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}
