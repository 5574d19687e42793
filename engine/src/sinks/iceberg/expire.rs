//! Snapshot expiry as Iceberg's retention rules say (`history.expire.max-snapshot-age-ms`,
//! `history.expire.min-snapshots-to-keep`, each branch's own settings; every snapshot a tag
//! points to is kept), then deletion of the files that only expired snapshots referenced:
//! their manifest lists, manifests, data and delete files.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use iceberg::spec::{
    ManifestStatus, SnapshotReference, SnapshotRetention, TableMetadata, MAIN_BRANCH,
};

use super::table::IcebergTable;
use super::IcebergError;

/// A table's branches and tags (the metadata keeps them to itself: read from its JSON form).
pub(super) fn refs_of(
    metadata: &TableMetadata,
) -> Result<HashMap<String, SnapshotReference>, serde_json::Error> {
    match serde_json::to_value(metadata)?.get_mut("refs") {
        Some(refs) => serde_json::from_value(refs.take()),
        None => Ok(HashMap::new()),
    }
}

/// Java's default `history.expire.max-snapshot-age-ms`: five days.
const DEFAULT_MAX_SNAPSHOT_AGE_MS: i64 = 5 * 24 * 3600 * 1000;

/// How long snapshots are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Snapshots older than this may go (unless kept for a count or a ref).
    pub max_age_ms: i64,
    /// Each branch keeps at least this many of its newest snapshots.
    pub min_to_keep: usize,
}

/// What an expiry did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Snapshots removed from the metadata.
    pub snapshots: usize,
    /// Files deleted (manifest lists, manifests, data and delete files).
    pub files: usize,
}

/// What has been read of a table's manifest lists and manifests (files never change, so an
/// expiry only reads those of snapshots it has not seen).
#[derive(Debug, Default)]
pub struct FileIndex {
    /// Snapshot → its manifests.
    lists: HashMap<i64, Vec<Arc<str>>>,
    /// Manifest → every file it names, and whether the entry is live (added or existing).
    manifests: HashMap<Arc<str>, Vec<(Arc<str>, bool)>>,
    /// Every path above once (manifests repeat most of the paths of those before them).
    paths: HashSet<Arc<str>>,
}

impl FileIndex {
    /// `path`, shared with its other mentions.
    fn intern(&mut self, path: &str) -> Arc<str> {
        if let Some(known) = self.paths.get(path) {
            return Arc::clone(known);
        }
        let path: Arc<str> = Arc::from(path);
        self.paths.insert(Arc::clone(&path));
        path
    }
}

impl IcebergTable {
    /// The table's retention settings (Java's defaults where unset).
    pub fn retention(&self) -> Retention {
        Retention {
            max_age_ms: self.property_or(
                "history.expire.max-snapshot-age-ms",
                DEFAULT_MAX_SNAPSHOT_AGE_MS,
            ),
            min_to_keep: self
                .property_or("history.expire.min-snapshots-to-keep", 1usize)
                .max(1),
        }
    }

    /// The snapshots `retention` lets go at `now_ms`: neither the current one, nor one of a
    /// branch's newest `min_to_keep` or younger ones, nor one a tag points to, nor one younger
    /// than the age limit that no branch reaches.
    pub(super) fn expirable(
        &self,
        retention: Retention,
        now_ms: i64,
    ) -> Result<Vec<i64>, IcebergError> {
        let mut refs = refs_of(&self.metadata)
            .map_err(|e| IcebergError::Io(format!("table {} refs: {e}", self.ident)))?;
        if let Some(current) = self.metadata.current_snapshot_id() {
            refs.entry(MAIN_BRANCH.to_owned())
                .or_insert_with(|| SnapshotReference {
                    snapshot_id: current,
                    retention: SnapshotRetention::branch(None, None, None),
                });
        }
        let mut kept: HashSet<i64> = self.metadata.current_snapshot_id().into_iter().collect();
        let mut on_a_branch = HashSet::new();
        for reference in refs.values() {
            let (min_to_keep, max_age_ms) = match reference.retention {
                SnapshotRetention::Tag { .. } => {
                    kept.insert(reference.snapshot_id);
                    continue;
                }
                SnapshotRetention::Branch {
                    min_snapshots_to_keep,
                    max_snapshot_age_ms,
                    ..
                } => (
                    min_snapshots_to_keep.map_or(retention.min_to_keep, |n| n.max(1) as usize),
                    max_snapshot_age_ms.unwrap_or(retention.max_age_ms),
                ),
            };
            let mut next = Some(reference.snapshot_id);
            let mut depth = 0;
            while let Some(snapshot) = next.and_then(|id| self.metadata.snapshot_by_id(id)) {
                on_a_branch.insert(snapshot.snapshot_id());
                if depth < min_to_keep || snapshot.timestamp_ms() >= now_ms - max_age_ms {
                    kept.insert(snapshot.snapshot_id());
                }
                depth += 1;
                next = snapshot.parent_snapshot_id();
            }
        }
        Ok(self
            .metadata
            .snapshots()
            .filter(|s| !kept.contains(&s.snapshot_id()))
            .filter(|s| {
                on_a_branch.contains(&s.snapshot_id())
                    || s.timestamp_ms() < now_ms - retention.max_age_ms
            })
            .map(|s| s.snapshot_id())
            .collect())
    }

    /// Expires what `retention` lets go at `now_ms` in one metadata commit, then deletes the
    /// files only the expired snapshots referenced.
    pub fn expire_snapshots(
        &mut self,
        retention: Retention,
        now_ms: i64,
    ) -> Result<Expired, IcebergError> {
        // Nothing older than the table's age limit: nothing to do (without reading the refs).
        let oldest = self.metadata.snapshots().map(|s| s.timestamp_ms()).min();
        if oldest.is_none_or(|oldest| oldest >= now_ms - retention.max_age_ms) {
            return Ok(Expired::default());
        }
        // The refs as they are now (another engine may have tagged a snapshot; a REST commit
        // only asserts `main`). A `main` another writer moved is not this writer's to expire.
        let current = self.metadata.current_snapshot_id();
        self.reload()?;
        if self.metadata.current_snapshot_id() != current {
            return Err(IcebergError::ConcurrentSnapshot {
                table: self.ident.to_string(),
                snapshot: self.metadata.current_snapshot_id().unwrap_or_default(),
            });
        }
        let expired = self.expirable(retention, now_ms)?;
        if expired.is_empty() {
            return Ok(Expired::default());
        }
        // Their manifest lists, read once they are out of the metadata (reading first would
        // make the commit lose more races with a running pipeline).
        let lists: Vec<(i64, String)> = expired
            .iter()
            .filter_map(|id| self.metadata.snapshot_by_id(*id))
            .map(|s| (s.snapshot_id(), s.manifest_list().to_owned()))
            .collect();
        let metadata = self
            .metadata
            .clone()
            .into_builder(Some(self.metadata_location.clone()))
            .remove_snapshots(&expired)
            .build()
            .map_err(|e| IcebergError::iceberg("expiring snapshots", e))?
            .metadata;
        self.swap_metadata(metadata)?;
        self.index_snapshots(&lists)?;
        let mut unreferenced = self.unreferenced_files(&expired);
        unreferenced.extend(lists.into_iter().map(|(_, list)| list));
        let files = self.delete_files(&unreferenced);
        tracing::info!(table = %self.ident, snapshots = expired.len(), files, "expired iceberg snapshots");
        Ok(Expired {
            snapshots: expired.len(),
            files,
        })
    }

    /// Reads the manifest lists (and their manifests) not indexed yet of the table's snapshots
    /// and of `expired` ones (snapshot, manifest list).
    fn index_snapshots(&mut self, expired: &[(i64, String)]) -> Result<(), IcebergError> {
        let unread: Vec<(i64, String)> = self
            .metadata
            .snapshots()
            .map(|s| (s.snapshot_id(), s.manifest_list().to_owned()))
            .chain(expired.iter().cloned())
            .filter(|(id, _)| !self.file_index.lists.contains_key(id))
            .collect();
        for (snapshot, list) in unread {
            let manifest_files = self.block_on(self.manifests(&list))?;
            let mut paths = Vec::new();
            for manifest_file in manifest_files.entries() {
                let path = self.file_index.intern(&manifest_file.manifest_path);
                if !self.file_index.manifests.contains_key(&path) {
                    let entries = self.block_on(self.entries(manifest_file))?;
                    let files = entries
                        .iter()
                        .map(|e| {
                            let live = e.status() != ManifestStatus::Deleted;
                            (self.file_index.intern(e.file_path()), live)
                        })
                        .collect();
                    self.file_index.manifests.insert(Arc::clone(&path), files);
                }
                paths.push(path);
            }
            self.file_index.lists.insert(snapshot, paths);
        }
        Ok(())
    }

    /// The files of the `expired` snapshots (now out of the metadata) that no snapshot still in
    /// it references; forgets the expired snapshots and their manifests.
    fn unreferenced_files(&mut self, expired: &[i64]) -> Vec<String> {
        let index = &mut self.file_index;
        let retained: HashSet<i64> = self.metadata.snapshots().map(|s| s.snapshot_id()).collect();
        let retained_manifests: HashSet<&Arc<str>> = index
            .lists
            .iter()
            .filter(|(id, _)| retained.contains(id))
            .flat_map(|(_, manifests)| manifests)
            .collect();
        let live: HashSet<&Arc<str>> = retained_manifests
            .iter()
            .filter_map(|m| index.manifests.get(*m))
            .flatten()
            .filter(|(_, live)| *live)
            .map(|(file, _)| file)
            .collect();
        let mut manifests = HashSet::new();
        let mut files = HashSet::new();
        for id in expired {
            for manifest in index.lists.get(id).into_iter().flatten() {
                if retained_manifests.contains(manifest) {
                    continue;
                }
                manifests.insert(manifest.clone());
                for (file, _) in index.manifests.get(manifest).into_iter().flatten() {
                    if !live.contains(file) {
                        files.insert(file.clone());
                    }
                }
            }
        }
        let mut unreferenced: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        unreferenced.extend(manifests.iter().map(|m| m.to_string()));
        for id in expired {
            index.lists.remove(id);
        }
        for manifest in &manifests {
            index.manifests.remove(manifest);
        }
        drop((files, manifests));
        // Paths nothing mentions any more (only the interning set holds them).
        index.paths.retain(|path| Arc::strong_count(path) > 1);
        unreferenced
    }
}
