//! A miniature mission loop wiring every piece of orch-core together:
//! slots per role, a breaker per provider, retry with error classes, hooks around each turn,
//! stagnation tracking per round, and a shutdown manager whose token stops everything.
//!
//! Run: `cargo run -p orch-core --example mission_round`

use std::sync::Arc;
use std::time::Duration;

use orch_core::{
    AgentRole, BreakerConfig, CircuitBreakers, Classify, ConcurrencyController, ErrorClass,
    HookDecision, HookPhase, HookRegistry, HookSpec, Priority, ProgressSignal, ProgressTracker,
    RetryPolicy, ShutdownManager,
};

#[derive(Debug)]
struct TurnError(ErrorClass);

impl std::fmt::Display for TurnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "turn failed: {:?}", self.0)
    }
}

impl Classify for TurnError {
    fn class(&self) -> ErrorClass {
        self.0
    }
}

#[derive(Debug)]
struct Turn {
    item: u32,
    prompt: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = Arc::new(ShutdownManager::default());
    let stop = shutdown.token();
    let _signals = shutdown.spawn_signal_listener();

    let slots = Arc::new(ConcurrencyController::new());
    let breakers = Arc::new(CircuitBreakers::<String>::new(BreakerConfig::default()));
    let hooks = Arc::new(
        HookRegistry::<Turn>::builder()
            .register(HookSpec::new("tag", HookPhase::Early), |t: &mut Turn| {
                t.prompt.push_str(" (keep the diff small)");
                HookDecision::Continue
            })
            .register(
                HookSpec::new("guard", HookPhase::Normal).after("tag"),
                |t: &mut Turn| {
                    if t.prompt.contains("rm -rf") {
                        HookDecision::Veto("destructive".into())
                    } else {
                        HookDecision::Continue
                    }
                },
            )
            .build()?,
    );
    {
        let slots = Arc::clone(&slots);
        shutdown.register("close slots", 0, move || async move { slots.close() })?;
    }

    let retry = RetryPolicy {
        initial_delay: Duration::from_millis(5),
        ..RetryPolicy::default()
    };
    let mut progress = ProgressTracker::default();
    let mut done = Vec::new();

    for round in 0..6 {
        if stop.is_cancelled() {
            break;
        }
        let mut workers = Vec::new();
        for item in 0..3u32 {
            let (slots, breakers, hooks) = (slots.clone(), breakers.clone(), hooks.clone());
            workers.push(tokio::spawn(async move {
                let token = slots
                    .acquire(AgentRole::Worker, Priority::Normal)
                    .await
                    .ok()?;
                let mut turn = Turn {
                    item,
                    prompt: format!("implement item {item}"),
                };
                if !hooks.run(&mut turn).is_proceed() {
                    token.failure();
                    return None;
                }
                let breaker = breakers.get("simulated");
                let mut attempt = 0;
                let r = retry
                    .run(|| {
                        attempt += 1;
                        let first = attempt == 1;
                        let breaker = Arc::clone(&breaker);
                        async move {
                            // A rate limit is not the provider being down: the breaker
                            // counts only network errors.
                            let is_outage = |e: &TurnError| e.0 == ErrorClass::Network;
                            breaker
                                .call_with(is_outage, || async move {
                                    // The first attempt of every turn hits a rate limit.
                                    if first {
                                        Err(TurnError(ErrorClass::RateLimit { retry_after: None }))
                                    } else {
                                        Ok(turn.item)
                                    }
                                })
                                .await
                                .map_err(|e| {
                                    e.into_inner().unwrap_or(TurnError(ErrorClass::Network))
                                })
                        }
                    })
                    .await;
                match r {
                    Ok(v) => {
                        token.success();
                        Some(v)
                    }
                    Err(_) => {
                        token.failure();
                        None
                    }
                }
            }));
        }
        for w in workers {
            if let Some(item) = w.await?
                && !done.contains(&item)
            {
                done.push(item);
            }
        }
        done.sort_unstable();
        // The plan stops changing once every item is done: stagnation kicks in.
        let signal = progress.observe_state(&done)?;
        println!("round {round}: done {done:?} -> {signal:?}");
        if matches!(signal, ProgressSignal::Intervene { .. }) {
            println!("no progress for 3 rounds: shutting down");
            let report = shutdown.shutdown().await;
            println!("shutdown clean: {}", report.is_clean());
        }
    }
    println!(
        "slots: {:?}",
        slots
            .stats()
            .keys
            .iter()
            .map(|k| (&k.key, k.limit))
            .collect::<Vec<_>>()
    );
    Ok(())
}
