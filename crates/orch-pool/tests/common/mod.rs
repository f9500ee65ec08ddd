//! A scripted manager for the keyed-pool tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orch_pool::{Manager, Metrics, TeardownReason};
use parking_lot::Mutex;
use tokio::sync::watch;

#[derive(Debug)]
pub struct Res {
    pub id: u64,
    pub key: String,
    pub resets: u32,
    pub fail_recycle: bool,
    pub fail_check: bool,
    pub dirty: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("scripted failure: {0}")]
pub struct Fail(pub &'static str);

#[derive(Debug)]
pub struct TestManager {
    next: AtomicU64,
    pub torn_down: Mutex<Vec<(String, u64, TeardownReason)>>,
    pub fail_create: Mutex<HashSet<String>>,
    pub create_delay: Mutex<Option<Duration>>,
    pub recycle_delay: Mutex<Option<Duration>>,
    /// Teardown waits until this is true ("the session is idle").
    pub safe: watch::Sender<bool>,
    pub checks: AtomicU64,
}

impl TestManager {
    pub fn new() -> Self {
        Self {
            next: AtomicU64::new(0),
            torn_down: Mutex::new(Vec::new()),
            fail_create: Mutex::new(HashSet::new()),
            create_delay: Mutex::new(None),
            recycle_delay: Mutex::new(None),
            safe: watch::channel(true).0,
            checks: AtomicU64::new(0),
        }
    }

    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    pub fn teardowns(&self) -> Vec<(String, u64, TeardownReason)> {
        self.torn_down.lock().clone()
    }

    pub fn created(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }
}

/// `Arc<TestManager>` so a test keeps a handle on what the pool's manager saw.
#[derive(Debug, Clone)]
pub struct Shared(pub Arc<TestManager>);

impl Manager for Shared {
    type Key = String;
    type Resource = Res;
    type Error = Fail;

    async fn create(&self, key: &String) -> Result<Res, Fail> {
        let delay = *self.0.create_delay.lock();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if self.0.fail_create.lock().contains(key) {
            return Err(Fail("create"));
        }
        Ok(Res {
            id: self.0.next.fetch_add(1, Ordering::SeqCst),
            key: key.clone(),
            resets: 0,
            fail_recycle: false,
            fail_check: false,
            dirty: false,
        })
    }

    async fn recycle(&self, _key: &String, res: &mut Res, _m: &Metrics) -> Result<(), Fail> {
        let delay = *self.0.recycle_delay.lock();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if res.fail_recycle {
            return Err(Fail("recycle"));
        }
        res.resets += 1;
        res.dirty = false;
        Ok(())
    }

    async fn check(&self, _key: &String, res: &mut Res, _m: &Metrics) -> Result<(), Fail> {
        self.0.checks.fetch_add(1, Ordering::SeqCst);
        if res.fail_check {
            Err(Fail("check"))
        } else {
            Ok(())
        }
    }

    async fn teardown(&self, key: &String, res: Res, reason: TeardownReason) {
        let mut safe = self.0.safe.subscribe();
        // Only destroy once the resource is safe to destroy.
        let _ = safe.wait_for(|s| *s).await;
        self.0.torn_down.lock().push((key.clone(), res.id, reason));
    }
}
