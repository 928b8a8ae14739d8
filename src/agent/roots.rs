//! The watched roots as the agent knows them between two configs: each
//! one's journal key (and back), the identity of the folder being watched,
//! how it is watched, and the watch problems already reported. A reload
//! replaces all of it at once ([`Roots::adopt`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::config::{RootId, Settings, WatchSettings};
use crate::control::ReloadReport;
use crate::journal::FileRow;
use crate::watch::WatchMode;

/// A folder's (device, inode); None: missing, or not a folder.
pub(super) type Identity = Option<(u64, u64)>;

/// A root's identity after an event on the root itself: not a folder's, so
/// the next heartbeat judges it anew (missing, a link, or a folder to watch
/// again) and says so.
const TO_RECHECK: (u64, u64) = (u64::MAX, u64::MAX);

pub(super) struct Roots {
    /// Each root's journal key ([`WatchSettings::key`]), and back: the one
    /// place a journal record's root becomes a [`RootId`].
    keys: Vec<String>,
    by_key: HashMap<String, RootId>,
    /// Per root: the identity of the folder being watched (None: missing).
    ids: Vec<Identity>,
    /// Per root: how it is watched (empty for `--once`: one scan).
    modes: Vec<WatchMode>,
    /// Watch problems already reported (`watch_degraded` once per problem).
    degraded: HashSet<String>,
}

impl Roots {
    pub(super) fn new(settings: &Settings) -> Roots {
        let keys: Vec<String> = settings.watches.iter().map(WatchSettings::key).collect();
        let by_key = settings.root_ids().map(|id| (keys[id.0].clone(), id)).collect();
        Roots {
            keys,
            by_key,
            ids: Vec::new(),
            modes: Vec::new(),
            degraded: HashSet::new(),
        }
    }

    /// Takes `settings`' roots (their identities looked at now); says which
    /// were added and removed.
    pub(super) fn adopt(&mut self, settings: &Settings) -> ReloadReport {
        let old = std::mem::replace(self, Roots::new(settings));
        self.degraded = old.degraded;
        self.look(settings);
        let old_keys: HashSet<&String> = old.keys.iter().collect();
        let new_keys: HashSet<&String> = self.keys.iter().collect();
        ReloadReport {
            changed: Vec::new(),
            roots_added: self
                .keys
                .iter()
                .filter(|k| !old_keys.contains(k))
                .cloned()
                .collect(),
            roots_removed: old
                .keys
                .iter()
                .filter(|k| !new_keys.contains(k))
                .cloned()
                .collect(),
            roots: self.keys.len(),
        }
    }

    /// Root `id`'s journal key.
    pub(super) fn key(&self, id: RootId) -> String {
        self.keys[id.0].clone()
    }

    /// The root with journal key `key` (None: no longer watched).
    pub(super) fn of_key(&self, key: &str) -> Option<RootId> {
        self.by_key.get(key).copied()
    }

    /// The configured root a journal record belongs to (None: no longer watched).
    pub(super) fn of(&self, row: &FileRow) -> Option<RootId> {
        self.of_key(&row.root)
    }

    /// Notes each root's folder identity now.
    pub(super) fn look(&mut self, settings: &Settings) {
        self.ids = settings
            .watches
            .iter()
            .map(|w| folder_identity(&w.path))
            .collect();
    }

    /// Root `i`'s identity when last looked at.
    pub(super) fn identity(&self, id: RootId) -> Identity {
        self.ids.get(id.0).copied().flatten()
    }

    pub(super) fn set_identity(&mut self, id: RootId, identity: Identity) {
        self.ids[id.0] = identity;
    }

    /// An event on the root itself: the next look re-watches and rescans it.
    pub(super) fn recheck(&mut self, id: RootId) {
        self.ids[id.0] = Some(TO_RECHECK);
    }

    pub(super) fn set_modes(&mut self, modes: Vec<WatchMode>) {
        self.modes = modes;
    }

    pub(super) fn set_mode(&mut self, id: RootId, mode: WatchMode) {
        self.modes[id.0] = mode;
    }

    /// How root `id` is watched (None: by one scan).
    pub(super) fn mode(&self, id: RootId) -> Option<&WatchMode> {
        self.modes.get(id.0)
    }

    /// The roots' problems for `/healthz`: a folder missing, a root polled
    /// because the OS limit on watches was reached.
    pub(super) fn problems(&self, settings: &Settings) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, w) in settings.watches.iter().enumerate() {
            if self.ids.get(i).is_some_and(Option::is_none) {
                problems.push(format!(
                    "watched folder {} is missing, unmounted or replaced by a symbolic link",
                    w.path.display()
                ));
            }
            if let Some(WatchMode::Polling {
                limit_reached: true, ..
            }) = self.modes.get(i)
            {
                problems.push(format!(
                    "{} is polled: the OS limit on watched folders was reached",
                    w.path.display()
                ));
            }
        }
        problems
    }

    /// Of the watch problems there are `now`, those not reported yet (each
    /// is reported once, until it clears and comes back).
    pub(super) fn newly_degraded(&mut self, now: HashSet<String>) -> Vec<String> {
        let fresh = now.difference(&self.degraded).cloned().collect();
        self.degraded = now;
        fresh
    }
}

/// (device, inode) of a folder, to notice it was replaced; None if missing
/// or replaced by a symbolic link (never followed: it could point at any
/// folder of the agent's user).
pub(super) fn folder_identity(path: &Path) -> Identity {
    let m = std::fs::symlink_metadata(path).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Some((0, 0))
    }
}
