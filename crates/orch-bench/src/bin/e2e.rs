//! Runs the end-to-end benchmarks and prints the table.
use std::path::PathBuf;

use orch_bench::{Row, real, render, sim};

fn usage() -> ! {
    eprintln!(
        "usage: e2e [--only 1,2,..] [--items N] [--tmp DIR]\n\
         benchmark 3 by hand: e2e --write-stream DIR replayed|synthetic; \
         e2e --serve-sse DIR/body.sse (prints its URL); \
         e2e --consume-events DIR/manifest.json URL"
    );
    std::process::exit(2)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // Helper processes of benchmark 3: the SSE server and our consumer.
    match argv.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--serve-sse", body] => {
            if let Err(e) = orch_bench::events::serve_child(std::path::Path::new(body)) {
                eprintln!("serve-sse: {e}");
                std::process::exit(1);
            }
            return;
        }
        ["--write-stream", dir, kind] => {
            if let Err(e) = orch_bench::events::write_stream(std::path::Path::new(dir), kind) {
                eprintln!("write-stream: {e}");
                std::process::exit(1);
            }
            return;
        }
        ["--consume-events", manifest, url] => {
            match orch_bench::events::consume_child(std::path::Path::new(manifest), url) {
                Ok(m) => println!("{}", serde_json::to_string(&m).expect("serialises")),
                Err(e) => {
                    eprintln!("consume-events: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
        _ => {}
    }
    let mut args = argv.into_iter();
    let mut only: Vec<u8> = vec![1, 2, 3, 4, 5, 6, 7];
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
                3 => orch_bench::events::bench3().await,
                4 => {
                    let env = real::RealEnv::start(real::script("", std::time::Duration::ZERO)?)?;
                    real::bench4(&env).await
                }
                5 => real::bench5().await,
                6 => real::bench6().await,
                7 => orch_bench::v2::bench7().await,
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
