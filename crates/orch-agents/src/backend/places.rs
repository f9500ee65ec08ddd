//! The other directories a backend's sessions work in (a git mission's worktrees, see
//! [`EditScope::within`](crate::backend::EditScope::within)): one backend per directory,
//! made on first use and owned by the main one, which keeps what `provision` asked so that
//! a place made later gets it too. Shared by both OpenCode backends.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use orch_core::AgentRole;

use crate::backend::BackendError;

/// What a place must do when the main backend provisions a role.
pub(crate) trait Place {
    /// Holds `sessions` sessions of `role` in this directory.
    fn provision_here(&self, role: AgentRole, sessions: usize);
}

/// The places of one backend.
pub(crate) struct Places<B> {
    /// Held only for a look-up or an insert, never across an await: `all` and `provision`
    /// always see every place made so far.
    map: parking_lot::Mutex<HashMap<PathBuf, Arc<B>>>,
    /// Serialises making places, so a directory is connected once.
    making: tokio::sync::Mutex<()>,
    provisioned: parking_lot::Mutex<HashMap<AgentRole, usize>>,
}

impl<B> std::fmt::Debug for Places<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Places")
            .field("dirs", &self.map.lock().keys().collect::<Vec<_>>())
            .field("provisioned", &*self.provisioned.lock())
            .finish()
    }
}

impl<B> Default for Places<B> {
    fn default() -> Self {
        Places {
            map: parking_lot::Mutex::default(),
            making: tokio::sync::Mutex::default(),
            provisioned: parking_lot::Mutex::default(),
        }
    }
}

impl<B: Place> Places<B> {
    /// The place of `dir`, made with `make` on first use and provisioned as the main
    /// backend is.
    pub(crate) async fn get_or_make<F, Fut>(
        &self,
        dir: &Path,
        make: F,
    ) -> Result<Arc<B>, BackendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<B, BackendError>>,
    {
        if let Some(place) = self.map.lock().get(dir) {
            return Ok(Arc::clone(place));
        }
        let _making = self.making.lock().await;
        if let Some(place) = self.map.lock().get(dir) {
            return Ok(Arc::clone(place));
        }
        let place = Arc::new(make().await?);
        for (role, sessions) in self.provisioned.lock().iter() {
            place.provision_here(*role, *sessions);
        }
        self.map.lock().insert(dir.to_owned(), Arc::clone(&place));
        Ok(place)
    }

    /// Every place made so far.
    pub(crate) fn all(&self) -> Vec<Arc<B>> {
        self.map.lock().values().cloned().collect()
    }

    /// Records `sessions` of `role` for the places to come and provisions those made.
    pub(crate) fn provision(&self, role: AgentRole, sessions: usize) {
        self.provisioned.lock().insert(role, sessions);
        for place in self.all() {
            place.provision_here(role, sessions);
        }
    }
}
