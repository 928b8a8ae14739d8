//! The upload in flight on a fleet node: the session as the database holds
//! it (the fleet's), each step fenced by this node's claim, and recorded
//! locally too.

use super::*;

impl Fleet {
    /// The session to resume: the database's record (it is the fleet's),
    /// with the parts this node also recorded locally for the same session.
    pub async fn session(&self, id: i64) -> Result<Option<SavedSession>, JournalError> {
        let Some(claim) = self.claim(id) else {
            return self.local.session(id).await;
        };
        let Some(mut saved) = claim.saved else {
            return Ok(None);
        };
        if let Some(mine) = self.local.session(id).await?
            && mine.session.session_id == saved.session.session_id
            && mine.done.len() == saved.done.len()
        {
            for (d, m) in saved.done.iter_mut().zip(&mine.done) {
                *d |= *m;
            }
            saved.file_id = mine.file_id;
        }
        Ok(Some(saved))
    }

    pub async fn save_session(
        &self,
        id: i64,
        s: Session,
        file: FileId,
        sha256: String,
    ) -> Result<(), JournalError> {
        let (s2, sha2) = (s.clone(), sha256.clone());
        self.fence(id, async move |pg, c| {
            pg.save_session(c.pg_id, c.token, &s2, &sha2).await
        })
        .await?;
        if let Some(c) = self.inner.claims.held().get_mut(&id) {
            c.saved = None;
        }
        self.local.save_session(id, s, file, sha256).await
    }

    /// Part `index` is stored: recorded locally, and in the database
    /// without waiting (a lost mark only re-sends a part).
    pub fn part_done(&self, id: i64, index: usize) {
        self.local.part_done(id, index);
        if let Some(c) = self.claim(id) {
            let pg = self.inner.pg.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(pg::CALL_TIMEOUT, pg.part_done(c.pg_id, c.token, index)).await;
            });
        }
    }

    /// Complete may be sent: the claim stands with a third of the lease left.
    pub async fn completing(&self, id: i64) -> Result<(), JournalError> {
        let margin = self.inner.pg.lease / 3;
        self.fence(id, async move |pg, c| {
            pg.completing(c.pg_id, c.token, margin).await
        })
        .await?;
        self.local.completing(id).await
    }

    /// (Fleets upload multipart only; see the module notes. Fenced all the same.)
    pub async fn direct_sending(
        &self,
        id: i64,
        began_at_ms: i64,
        file: FileId,
        sha256: String,
    ) -> Result<(), JournalError> {
        let margin = self.inner.pg.lease / 3;
        self.fence(id, async move |pg, c| {
            pg.completing(c.pg_id, c.token, margin).await
        })
        .await?;
        self.local.direct_sending(id, began_at_ms, file, sha256).await
    }

    pub async fn drop_session(&self, id: i64) -> Result<(), JournalError> {
        if let Some(c) = self.claim(id) {
            let _ =
                tokio::time::timeout(pg::CALL_TIMEOUT, self.inner.pg.drop_session(c.pg_id, c.token)).await;
            if let Some(c) = self.inner.claims.held().get_mut(&id) {
                c.saved = None;
            }
        }
        self.local.drop_session(id).await
    }
}
