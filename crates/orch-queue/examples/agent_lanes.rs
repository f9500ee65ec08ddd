//! Places follow-up work on the lane (session) that already has the files in context.
//!
//! Run with `cargo run -p orch-queue --example agent_lanes`.

use std::time::Duration;

use orch_queue::{LaneScheduler, Origin};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Three Worker sessions; tasks are described by a string, keyed by the files they touch.
    let (scheduler, lanes) = LaneScheduler::<&'static str, String>::new(3)?;

    let mut sessions = Vec::new();
    for mut lane in lanes {
        let scheduler = scheduler.clone();
        sessions.push(tokio::spawn(async move {
            while let Some(item) = lane.next().await {
                let how = match item.origin {
                    Origin::Own => format!("{:?}", item.placement),
                    Origin::Stolen { from } => format!("stolen from {from}"),
                };
                println!("{}: {} [{how}]", lane.id(), item.task);
                tokio::time::sleep(Duration::from_millis(10)).await;
                // A review of an edit is a follow-up on the same files: it goes to the warm lane.
                if !item.task.starts_with("review") {
                    let review = format!("review {}", item.task);
                    let _ = scheduler.push_with_affinity(item.keys.clone(), review);
                }
            }
        }));
    }

    scheduler.push_with_affinity(["src/auth.rs"], "add JWT validation".to_owned())?;
    scheduler.push_with_affinity(["src/db.rs"], "add users table".to_owned())?;
    scheduler.push_with_affinity(["src/api.rs", "src/auth.rs"], "protect routes".to_owned())?;
    scheduler.push("update README".to_owned())?;

    tokio::time::sleep(Duration::from_millis(200)).await;
    scheduler.close();
    for s in sessions {
        s.await?;
    }
    let stats = scheduler.stats();
    println!(
        "pushed {}, steals {}, warm hit ratio {:.0}%",
        stats.pushed,
        stats.steals(),
        stats.warm_hit_ratio() * 100.0
    );
    Ok(())
}
