//! `on_uploaded` and `on_set_complete` started for the agent: the facts
//! gathered from the outcome, the run spawned beside the uploads (its
//! result comes back as a task), and a failure logged and made an event.

use super::*;
use crate::control::Event;
use crate::hooks::{Facts, Kind, Ran};

impl Agent {
    /// After an upload (or an adoption) is recorded and `after_upload` has
    /// acted: root `id`'s `on_uploaded`, if it has one.
    pub(super) fn hook_uploaded(
        &mut self,
        id: RootId,
        path: &Path,
        o: &Outcome,
        local: Option<&crate::after::Done>,
    ) {
        let Some(hook) = self.settings.root(id).hooks.on_uploaded.clone() else {
            return;
        };
        let w = self.settings.root(id);
        let after = match local {
            Some(crate::after::Done::Deleted) => "deleted".to_string(),
            Some(crate::after::Done::Moved(to)) => format!("moved:{}", crate::text::path(to)),
            _ => "kept".to_string(),
        };
        let facts = Facts::default()
            .with("PATH", crate::text::path(path))
            .with("WATCH", crate::text::path(&w.path))
            .with("REMOTE_FOLDER", &o.folder)
            .with("NAME", &o.name)
            .with("REMOTE_PATH", mapping::remote_path(&o.folder, &o.name))
            .with("FILE_NO", &o.file.file_no)
            .with("URL", o.file.url.as_deref().unwrap_or(""))
            .with("SHA256", &o.sha256)
            .with("SIZE", o.size)
            .with("ADOPTED", if o.adopted.is_some() { "1" } else { "0" })
            .with("LOCAL", after);
        self.spawn_hook(&hook, Kind::Uploaded, path.to_path_buf(), facts);
    }

    /// A set is complete: root `id`'s `on_set_complete`, if it has one.
    /// `manifest`: the local manifest and the remote file it became.
    pub(super) fn hook_set_complete(
        &mut self,
        id: RootId,
        set_rel: &str,
        files: usize,
        manifest: Option<(&Path, &Outcome)>,
    ) {
        let Some(hook) = self.settings.root(id).hooks.on_set_complete.clone() else {
            return;
        };
        let w = self.settings.root(id);
        let dir = w.path.join(set_rel);
        let mut facts = Facts::default()
            .with("SET", set_rel)
            .with("SET_PATH", crate::text::path(&dir))
            .with("WATCH", crate::text::path(&w.path))
            .with("SET_FILES", files)
            .with("REMOTE_FOLDER", &w.remote_folder);
        if let Some((local, o)) = manifest {
            facts = facts
                .with("MANIFEST", crate::text::path(local))
                .with("MANIFEST_REMOTE_PATH", mapping::remote_path(&o.folder, &o.name))
                .with("MANIFEST_FILE_NO", &o.file.file_no)
                .with("MANIFEST_URL", o.file.url.as_deref().unwrap_or(""))
                .with("REMOTE_FOLDER", &o.folder);
        }
        self.spawn_hook(&hook, Kind::SetComplete, dir, facts);
    }

    fn spawn_hook(&mut self, hook: &crate::config::Hook, kind: Kind, subject: PathBuf, facts: Facts) {
        if self.opts.dry_run {
            return;
        }
        // The API key never reaches a hook, whichever variable holds it.
        let mut withheld = vec![crate::config::DEFAULT_KEY_ENV.to_string()];
        if self.settings.api.api_key_env != crate::config::DEFAULT_KEY_ENV {
            withheld.push(self.settings.api.api_key_env.clone());
        }
        tracing::debug!("{} {}: starting {}", kind.key(), subject.display(), hook.argv[0]);
        let run = self.hook_runner.run(hook, kind, subject, facts, withheld);
        self.tasks.spawn(async move { TaskResult::Hook(run.await) });
    }

    /// A hook ended: a failure is logged and becomes a `hook_failed` event.
    pub(super) async fn hook_ran(&mut self, ran: Ran) -> Result<(), AgentError> {
        match ran.result {
            Ok(()) => {
                tracing::debug!("{} {}: done", ran.kind.key(), ran.subject.display());
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    path = %ran.subject.display(),
                    "{} for {} failed: {e}",
                    ran.kind.key(),
                    ran.subject.display()
                );
                let mut ev = Event::new("hook_failed", self.clock.wall_ms()).path(&ran.subject);
                ev.error = Some(e.to_string());
                self.emit(ev.with("hook", ran.kind.key())).await
            }
        }
    }
}
