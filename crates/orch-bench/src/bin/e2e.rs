//! Runs the end-to-end benchmarks and prints the table.
use std::path::PathBuf;

use orch_bench::{Row, real, render, sim};

fn usage() -> ! {
    eprintln!("usage: e2e [--only 1,2,..] [--items N] [--tmp DIR]");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut only: Vec<u8> = vec![1, 2, 3, 4, 5, 6];
    let mut child: Option<u8> = None;
    let mut items = sim::ITEMS;
    let mut tmp = std::env::temp_dir();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--only" => {
                only = args
                    .next()
                    .unwrap_or_else(|| usage())
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect();
            }
            "--child" => child = args.next().and_then(|s| s.parse().ok()),
            "--items" => {
                items = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--tmp" => tmp = PathBuf::from(args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    if let Some(bench) = child {
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let result = rt.block_on(async {
            match bench {
                1 => sim::bench1(&tmp, items).await,
                2 => sim::bench2(&tmp, items).await,
                3 => orch_bench::events::bench3(200).await,
                4 => {
                    let env = real::RealEnv::start(real::script("", std::time::Duration::ZERO)?)?;
                    real::bench4(&env).await
                }
                5 => real::bench5().await,
                6 => real::bench6().await,
                n => Err(format!("no benchmark {n}")),
            }
        });
        match result {
            Ok(rows) => {
                for r in rows {
                    println!("{}", serde_json::to_string(&r).expect("row serialises"));
                }
            }
            Err(e) => {
                eprintln!("benchmark {bench} failed: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let mut rows: Vec<Row> = Vec::new();
    for bench in only {
        eprintln!("running benchmark {bench} …");
        let out = std::process::Command::new(&exe)
            .args([
                "--child",
                &bench.to_string(),
                "--items",
                &items.to_string(),
                "--tmp",
            ])
            .arg(&tmp)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            if let Ok(r) = serde_json::from_str::<Row>(line) {
                rows.push(r);
            }
        }
        if !out.status.success() {
            rows.push(Row::info(bench, "benchmark failed (see stderr)", "-"));
        }
    }
    println!("{}", render(&rows));
}
