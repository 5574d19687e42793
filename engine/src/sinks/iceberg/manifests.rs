//! The manifests a new snapshot carries over from its parent: those naming files the snapshot
//! removes are rewritten with `DELETED` entries for them (so that concurrent writers' and
//! readers' validations see the removal), and small ones are merged once there are many, as
//! Java's `commit.manifest.min-count-to-merge` and `commit.manifest.target-size-bytes` say.

use std::collections::{BTreeMap, HashSet};

use iceberg::spec::{
    DataFile, ManifestContentType, ManifestEntry, ManifestFile, ManifestWriterBuilder,
};

use super::summary::Tally;
use super::table::IcebergTable;
use super::IcebergError;

/// Java's default `commit.manifest.min-count-to-merge`.
const MIN_COUNT_TO_MERGE: usize = 100;
/// Java's default `commit.manifest.target-size-bytes`: 8 MB.
const TARGET_MANIFEST_BYTES: i64 = 8 << 20;

/// One entry of a manifest being written.
pub(super) enum Entry {
    /// A file this snapshot adds.
    Added(DataFile),
    /// A file carried over, with the snapshot and sequence numbers it was added with.
    Existing(ManifestEntry),
    /// A file this snapshot removes.
    Deleted(ManifestEntry),
}

impl IcebergTable {
    /// The parent's manifests, those naming a file of `removed` rewritten with a `DELETED`
    /// entry for it; with what was removed. A file of `removed` that is not live in the parent
    /// means another writer removed it first: a conflict.
    pub(super) async fn carried_manifests(
        &self,
        parent: Vec<ManifestFile>,
        removed: &HashSet<String>,
        (snapshot_id, stem): (i64, &str),
    ) -> Result<(Vec<ManifestFile>, Tally), IcebergError> {
        let mut tally = Tally::default();
        if removed.is_empty() {
            return Ok((parent, tally));
        }
        let mut found = 0;
        let mut manifests = Vec::with_capacity(parent.len());
        for (i, manifest_file) in parent.into_iter().enumerate() {
            let manifest = self.entries(&manifest_file).await?;
            let touched = manifest
                .iter()
                .any(|e| e.is_alive() && removed.contains(e.file_path()));
            if !touched {
                manifests.push(manifest_file);
                continue;
            }
            let mut entries = Vec::new();
            for entry in manifest.iter() {
                if !entry.is_alive() {
                    continue;
                }
                let entry = entry.as_ref().clone();
                if removed.contains(entry.file_path()) {
                    found += 1;
                    tally.count(entry.data_file());
                    entries.push(Entry::Deleted(entry));
                } else {
                    entries.push(Entry::Existing(entry));
                }
            }
            let path = format!("{}/metadata/{stem}-r{i}.avro", self.metadata.location());
            manifests.push(
                self.write_manifest(
                    &path,
                    snapshot_id,
                    (manifest_file.content, manifest_file.partition_spec_id),
                    entries,
                )
                .await?,
            );
        }
        if found != removed.len() {
            return Err(IcebergError::Conflict(self.ident.to_string()));
        }
        Ok((manifests, tally))
    }

    /// `manifests` with the small ones of each kind merged into one once a kind has
    /// `commit.manifest.min-count-to-merge` of them (`commit.manifest-merge.enabled`); the
    /// `DELETED` entries of earlier snapshots drop out of merged manifests.
    pub(super) async fn merged_manifests(
        &self,
        manifests: Vec<ManifestFile>,
        (snapshot_id, stem): (i64, &str),
    ) -> Result<Vec<ManifestFile>, IcebergError> {
        let enabled = self.property_or("commit.manifest-merge.enabled", true);
        let min_count: usize =
            self.property_or("commit.manifest.min-count-to-merge", MIN_COUNT_TO_MERGE);
        let target: i64 =
            self.property_or("commit.manifest.target-size-bytes", TARGET_MANIFEST_BYTES);
        if !enabled || manifests.len() < min_count.max(2) {
            return Ok(manifests);
        }
        // Manifests this snapshot wrote (with its own DELETED entries) stay as they are.
        let mut kinds: BTreeMap<(bool, i32), Vec<ManifestFile>> = BTreeMap::new();
        let mut kept = Vec::new();
        for manifest in manifests {
            if manifest.added_snapshot_id == snapshot_id || manifest.manifest_length >= target {
                kept.push(manifest);
            } else {
                let deletes = manifest.content == ManifestContentType::Deletes;
                kinds
                    .entry((deletes, manifest.partition_spec_id))
                    .or_default()
                    .push(manifest);
            }
        }
        for ((deletes, spec_id), group) in kinds {
            if group.len() < min_count.max(2) {
                kept.extend(group);
                continue;
            }
            let mut entries = Vec::new();
            for manifest_file in &group {
                let manifest = self.entries(manifest_file).await?;
                entries.extend(
                    manifest
                        .iter()
                        .filter(|e| e.is_alive())
                        .map(|e| Entry::Existing(e.as_ref().clone())),
                );
            }
            let content = match deletes {
                true => ManifestContentType::Deletes,
                false => ManifestContentType::Data,
            };
            let path = format!(
                "{}/metadata/{stem}-merged-{}-{spec_id}.avro",
                self.metadata.location(),
                u8::from(deletes)
            );
            tracing::debug!(table = %self.ident, manifests = group.len(), "merging manifests");
            kept.push(
                self.write_manifest(&path, snapshot_id, (content, spec_id), entries)
                    .await?,
            );
        }
        Ok(kept)
    }

    /// Writes a manifest of `entries` (all data files, or all delete files) for partition spec
    /// `spec_id`.
    pub(super) async fn write_manifest(
        &self,
        path: &str,
        snapshot_id: i64,
        (content, spec_id): (ManifestContentType, i32),
        entries: Vec<Entry>,
    ) -> Result<ManifestFile, IcebergError> {
        let failed = |e| IcebergError::iceberg(path, e);
        let spec = self
            .metadata
            .partition_spec_by_id(spec_id)
            .ok_or_else(|| {
                IcebergError::Inconsistent(format!(
                    "table {} has no partition spec {spec_id}",
                    self.ident
                ))
            })?
            .as_ref()
            .clone();
        let output = self.io.new_output(path).map_err(failed)?;
        let builder =
            ManifestWriterBuilder::new(output, Some(snapshot_id), self.write_schema(), spec);
        let mut writer = match content {
            ManifestContentType::Deletes => builder.build_v2_deletes(),
            ManifestContentType::Data => builder.build_v2_data(),
        };
        let sequence_numbers = |entry: &ManifestEntry| {
            let sequence = entry.sequence_number().unwrap_or_default();
            (sequence, entry.file_sequence_number.or(Some(sequence)))
        };
        for entry in entries {
            match entry {
                Entry::Added(file) => writer.add_file(file, -1),
                Entry::Existing(entry) => {
                    let (sequence, file_sequence) = sequence_numbers(&entry);
                    let added_by = entry.snapshot_id().unwrap_or(snapshot_id);
                    writer.add_existing_file(entry.data_file, added_by, sequence, file_sequence)
                }
                Entry::Deleted(entry) => {
                    let (sequence, file_sequence) = sequence_numbers(&entry);
                    writer.add_delete_file(entry.data_file, sequence, file_sequence)
                }
            }
            .map_err(failed)?;
        }
        writer.write_manifest_file().await.map_err(failed)
    }
}
