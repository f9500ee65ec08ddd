//! A tiny client for the few routes the real-server tests use, on either OpenCode generation
//! (OpenCode 1: `/session…`, a synchronous prompt; OpenCode 2: `/api/session…`, a prompt that
//! is admitted, then the turn's `idle` history entry). Test-only: the orchestrator's own
//! clients live in `orch-opencode`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orch_testkit::Generation;
use orch_testkit::opencode::{MODEL_ID, PROVIDER_ID, TestServer};
use serde_json::{Value, json};

/// A session and the agent its prompts use.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) id: String,
    agent: Option<String>,
}

/// What a turn ended with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Turn {
    /// The assistant's text, all steps joined.
    pub(crate) text: String,
    /// The turn's error (its JSON), when it failed.
    pub(crate) error: Option<String>,
    /// The last step's output tokens.
    pub(crate) output_tokens: Option<u64>,
}

pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    username: String,
    password: String,
    generation: Generation,
    directory: PathBuf,
}

impl Api {
    pub(crate) fn new(server: &TestServer, directory: &Path) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: server.base_url().to_owned(),
            username: server.username().to_owned(),
            password: server.password().to_owned(),
            generation: server.generation(),
            directory: directory.to_owned(),
        }
    }

    /// `GET`/`POST` with the server's credentials; the JSON body of a 2xx JSON answer (or
    /// `null` for an empty one).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.username, Some(&self.password))
            .timeout(Duration::from_secs(120));
        if self.generation == Generation::V1 {
            request = request.query(&[("directory", self.directory.to_string_lossy().as_ref())]);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let is_json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() || !(is_json || text.is_empty()) {
            return Err(format!(
                "{path}: HTTP {status} (json: {is_json}): {text:.400}"
            ));
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| format!("{path}: bad JSON ({e}): {text:.300}"))
    }

    /// A session of the project directory, titled (so no title request is made), whose
    /// prompts go to `agent` (the default agent when `None`) and the scripted model.
    pub(crate) async fn create_session(
        &self,
        title: &str,
        agent: Option<&str>,
    ) -> Result<Session, String> {
        let post = reqwest::Method::POST;
        let id = match self.generation {
            Generation::V1 => self
                .call(post, "/session", Some(json!({"title": title})))
                .await?["id"]
                .clone(),
            Generation::V2 => {
                let mut body = json!({
                    "title": title,
                    "model": {"providerID": PROVIDER_ID, "id": MODEL_ID},
                    "location": {"directory": self.directory},
                });
                if let Some(agent) = agent {
                    body["agent"] = json!(agent);
                }
                self.call(post, "/api/session", Some(body)).await?["data"]["id"].clone()
            }
        };
        let id = id.as_str().ok_or("no session id")?.to_owned();
        Ok(Session {
            id,
            agent: agent.map(str::to_owned),
        })
    }

    /// Prompts `text` and waits for the turn to end (at most 90 s).
    pub(crate) async fn turn(&self, session: &Session, text: &str) -> Result<Turn, String> {
        match self.generation {
            Generation::V1 => {
                let mut body = json!({
                    "parts": [{"type": "text", "text": text}],
                    "model": {"providerID": PROVIDER_ID, "modelID": MODEL_ID},
                });
                if let Some(agent) = &session.agent {
                    body["agent"] = json!(agent);
                }
                let path = format!("/session/{}/message", session.id);
                let response = self.call(reqwest::Method::POST, &path, Some(body)).await?;
                let info = &response["info"];
                Ok(Turn {
                    text: response["parts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["type"] == "text")
                        .filter_map(|p| p["text"].as_str())
                        .collect(),
                    error: (!info["error"].is_null()).then(|| info["error"].to_string()),
                    output_tokens: info["tokens"]["output"].as_u64(),
                })
            }
            Generation::V2 => {
                let path = format!("/api/session/{}/prompt", session.id);
                let admitted = self
                    .call(reqwest::Method::POST, &path, Some(json!({"text": text})))
                    .await?;
                let ours = admitted["data"]["id"]
                    .as_str()
                    .ok_or("no message id")?
                    .to_owned();
                self.v2_wait_idle(&session.id, &ours).await
            }
        }
    }

    /// OpenCode 2: waits for the `idle` history entry after message `ours` (ids sort by
    /// time), then reads the turn from the entries between.
    async fn v2_wait_idle(&self, session: &str, ours: &str) -> Result<Turn, String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let mut entries = self.v2_history(session).await?;
            entries.retain(|e| e["id"].as_str().is_some_and(|id| id > ours));
            if let Some(idle) = entries.iter().find(|e| e["type"] == "idle") {
                let assistant: Vec<&Value> = entries
                    .iter()
                    .filter(|e| e["type"] == "assistant")
                    .collect();
                return Ok(Turn {
                    text: assistant
                        .iter()
                        .flat_map(|e| e["content"].as_array().into_iter().flatten())
                        .filter(|p| p["type"] == "text")
                        .filter_map(|p| p["text"].as_str())
                        .collect(),
                    error: (idle["outcome"] != "succeeded").then(|| idle.to_string()),
                    output_tokens: assistant
                        .last()
                        .and_then(|e| e["tokens"]["output"].as_u64()),
                });
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no idle entry after {ours} within 90 s: {entries:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// OpenCode 2: the session's history, oldest first.
    async fn v2_history(&self, session: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/session/{session}/message");
        let mut entries = self.call(reqwest::Method::GET, &path, None).await?["data"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        entries.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        Ok(entries)
    }

    /// Compacts the session and waits for the end: `Ok(())` when OpenCode accepted the
    /// summary.
    pub(crate) async fn compact(&self, session: &Session) -> Result<(), String> {
        match self.generation {
            Generation::V1 => {
                let path = format!("/session/{}/summarize", session.id);
                let body = json!({"providerID": PROVIDER_ID, "modelID": MODEL_ID});
                let done = self.call(reqwest::Method::POST, &path, Some(body)).await?;
                if done == json!(true) {
                    Ok(())
                } else {
                    Err(format!("summarize answered {done}"))
                }
            }
            Generation::V2 => {
                let path = format!("/api/session/{}/compact", session.id);
                self.call(reqwest::Method::POST, &path, Some(json!({})))
                    .await?;
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let history = self.v2_history(&session.id).await?;
                    let compaction = history.iter().rev().find(|e| e["type"] == "compaction");
                    match compaction.map(|c| c["status"].as_str().unwrap_or("")) {
                        Some("completed") => return Ok(()),
                        Some("failed") => return Err(format!("compaction failed: {compaction:?}")),
                        _ if Instant::now() > deadline => {
                            return Err(format!("compaction did not end: {history:?}"));
                        }
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        }
    }
}
