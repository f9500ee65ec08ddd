//! Async change notifications (`tokio` feature).

use std::time::Duration;

use orch_mvcc::{Durability, Item, ItemId, ItemState, Plan, StoreError, StoreOptions, TodoStore};

fn open(dir: &std::path::Path) -> TodoStore {
    TodoStore::open_with(
        dir,
        StoreOptions {
            durability: Durability::NoSync,
            poll_interval: Duration::from_millis(20),
            ..StoreOptions::default()
        },
    )
    .expect("store opens")
}

#[tokio::test]
async fn changed_wakes_on_local_and_other_store_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut plan = Plan::new("async");
    plan.push(Item::new(ItemId::new("A").unwrap(), "a"));
    store.compare_and_swap("p", 0, plan).unwrap();

    let err = store
        .changed(1, Duration::from_millis(30))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Timeout { after: 1, .. }));

    // Same store: woken by the in-process notification.
    let writer = store.clone();
    let local = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(10));
        writer
            .update("w", |p| p.set_state("A", ItemState::InProgress))
            .unwrap()
            .version
    });
    assert_eq!(
        store.changed(1, Duration::from_secs(10)).await.unwrap(),
        local.await.unwrap()
    );

    // Another handle (as another process would be): seen by polling.
    let other = open(dir.path());
    let remote = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(10));
        other
            .update("w", |p| p.set_state("A", ItemState::Done))
            .unwrap()
            .version
    });
    assert_eq!(
        store.changed(2, Duration::from_secs(10)).await.unwrap(),
        remote.await.unwrap()
    );
}
