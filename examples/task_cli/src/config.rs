//! Mission limits: flags, the config file, and the defaults, in that order of precedence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use orch_agents::{GitMode, MissionConfig};
use serde::{Deserialize, Serialize};

use crate::failure::Failure;

/// The config file read from the project when `--config` is not given.
pub(crate) const CONFIG_FILE: &str = ".orchestrator/task.toml";

/// Limits of a mission (each overrides the config file). The limit flags of `run`, `resume` and `retry`; saved with a mission so that a resume
/// keeps them (flags given to the resume win).
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Limits {
    /// Parallel Worker lanes [default: 4]
    #[arg(long, value_name = "N")]
    pub(crate) workers: Option<usize>,
    /// Parallel Reviewer turns [default: 2]
    #[arg(long, value_name = "N")]
    pub(crate) reviewers: Option<usize>,
    /// Attempts per item before it fails [default: 3]
    #[arg(long, value_name = "N")]
    pub(crate) max_attempts: Option<u32>,
    /// Commander rounds before the mission stops [default: 1000]
    #[arg(long, value_name = "N")]
    pub(crate) max_rounds: Option<u32>,
    /// Final integration reviews (each FAIL may add fix-up items) [default: 2]
    #[arg(long, value_name = "N")]
    pub(crate) integration_rounds: Option<u32>,
    /// Deadline of one agent turn, in seconds [default: 600]
    #[arg(long, value_name = "SECS")]
    pub(crate) turn_timeout: Option<u64>,
    /// Stop new work past this many tokens
    #[arg(long, value_name = "TOKENS")]
    pub(crate) token_budget: Option<u64>,
    /// Stop new work past this cost (the provider's currency)
    #[arg(long, value_name = "COST")]
    pub(crate) cost_budget: Option<f64>,
    /// Config file with the same limits [default: DIR/.orchestrator/task.toml if present]
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// How the mission uses git: branch (a branch and worktree of its own, a commit per item; the default inside a git repository), worktree-per-lane (also one per Worker lane), off (edit DIR in place; the default elsewhere)
    #[arg(long, value_name = "MODE", value_enum)]
    pub(crate) git: Option<GitChoice>,
    /// Edit DIR in place even inside a git repository (as --git off)
    #[arg(long, conflicts_with = "git")]
    #[serde(skip)]
    pub(crate) no_git: bool,
    /// A branch and worktree per Worker lane, merged into the mission's branch (as --git worktree-per-lane)
    #[arg(long, conflicts_with_all = ["git", "no_git"])]
    #[serde(skip)]
    pub(crate) worktree_per_lane: bool,
}

/// How a mission uses git (`--git`, `git` in `task.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum GitChoice {
    /// A branch and a worktree of its own; one commit per passed item.
    Branch,
    /// Also a branch and a worktree per Worker lane.
    WorktreePerLane,
    /// No git: agents edit the directory in place.
    Off,
}

impl GitChoice {
    /// The library's mode.
    pub(crate) fn mode(self) -> GitMode {
        match self {
            GitChoice::Branch => GitMode::Branch,
            GitChoice::WorktreePerLane => GitMode::WorktreePerLane,
            GitChoice::Off => GitMode::Off,
        }
    }
}

/// The most Worker lanes (and parallel reviews) a mission runs.
pub(crate) const MAX_LANES: usize = 50;

/// A key that takes one value or a list (`server = "URL"` or `server = ["URL", "URL"]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}

/// The config file (`task.toml`): every key optional, unknown keys are errors.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) workers: Option<usize>,
    pub(crate) reviewers: Option<usize>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) max_rounds: Option<u32>,
    pub(crate) integration_rounds: Option<u32>,
    pub(crate) turn_timeout_secs: Option<u64>,
    pub(crate) token_budget: Option<u64>,
    pub(crate) cost_budget: Option<f64>,
    /// `provider/model` used when `--model` is not given.
    pub(crate) model: Option<String>,
    /// OpenCode server URL (or URLs) used when `--server` is not given.
    pub(crate) server: Option<OneOrMany>,
    /// `v1` or `v2`: the OpenCode generation used when `--opencode-generation` is not given.
    pub(crate) opencode_generation: Option<String>,
    /// `branch`, `worktree-per-lane` or `off`: used when no git flag is given.
    pub(crate) git: Option<GitChoice>,
    /// Shell commands a Worker may run (`*` matches anything): `["python3 -m unittest*"]`.
    pub(crate) worker_commands: Option<Vec<String>>,
}

impl FileConfig {
    /// Parses the text of a config file.
    pub(crate) fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| {
            Failure::env(
                format!("cannot read the config file {}: {e}", path.display()),
                "fix the line named above (keys: workers, reviewers, max_attempts, max_rounds, \
                 integration_rounds, turn_timeout_secs, token_budget, cost_budget, model, server, \
                 opencode_generation, git, worker_commands)",
            )
        })
    }

    /// Loads `explicit`, else `<dir>/.orchestrator/task.toml` when it exists, else the defaults.
    pub(crate) fn load(
        explicit: Option<&Path>,
        dir: &Path,
    ) -> anyhow::Result<(Self, Option<PathBuf>)> {
        let path = match explicit {
            Some(path) => path.to_owned(),
            None => {
                let path = dir.join(CONFIG_FILE);
                if !path.is_file() {
                    return Ok((FileConfig::default(), None));
                }
                path
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Failure::env(
                format!("cannot read the config file {}: {e}", path.display()),
                "check the path given to --config",
            )
        })?;
        Ok((FileConfig::parse(&text, &path)?, Some(path)))
    }
}

impl Limits {
    /// These flags, each falling back to `saved`'s.
    pub(crate) fn over(&self, saved: &Limits) -> Limits {
        Limits {
            workers: self.workers.or(saved.workers),
            reviewers: self.reviewers.or(saved.reviewers),
            max_attempts: self.max_attempts.or(saved.max_attempts),
            max_rounds: self.max_rounds.or(saved.max_rounds),
            integration_rounds: self.integration_rounds.or(saved.integration_rounds),
            turn_timeout: self.turn_timeout.or(saved.turn_timeout),
            token_budget: self.token_budget.or(saved.token_budget),
            cost_budget: self.cost_budget.or(saved.cost_budget),
            config: self.config.clone().or_else(|| saved.config.clone()),
            git: self.git_choice().or(saved.git),
            no_git: false,
            worktree_per_lane: false,
        }
    }

    /// The git choice the flags make (`None`: no git flag).
    pub(crate) fn git_choice(&self) -> Option<GitChoice> {
        if self.no_git {
            Some(GitChoice::Off)
        } else if self.worktree_per_lane {
            Some(GitChoice::WorktreePerLane)
        } else {
            self.git
        }
    }

    /// The mission configuration: these flags over `file` over the defaults (git is decided
    /// by the caller, which knows the directory).
    pub(crate) fn mission_config(&self, file: &FileConfig) -> anyhow::Result<MissionConfig> {
        let defaults = MissionConfig::default();
        let config = MissionConfig {
            workers: self.workers.or(file.workers).unwrap_or(defaults.workers),
            reviewers: self
                .reviewers
                .or(file.reviewers)
                .unwrap_or(defaults.reviewers),
            max_attempts: self
                .max_attempts
                .or(file.max_attempts)
                .unwrap_or(defaults.max_attempts),
            max_rounds: self
                .max_rounds
                .or(file.max_rounds)
                .unwrap_or(defaults.max_rounds),
            integration_rounds: self
                .integration_rounds
                .or(file.integration_rounds)
                .unwrap_or(defaults.integration_rounds),
            turn_timeout: self
                .turn_timeout
                .or(file.turn_timeout_secs)
                .map_or(defaults.turn_timeout, Duration::from_secs),
            token_budget: self.token_budget.or(file.token_budget),
            cost_budget: self.cost_budget.or(file.cost_budget),
            worker_commands: file.worker_commands.clone().unwrap_or_default(),
            ..defaults
        };
        if let Some(bad) = config.worker_commands.iter().find(|c| c.trim().is_empty()) {
            return Err(Failure::usage(
                format!("worker_commands holds an empty command ({bad:?})"),
                "list commands such as worker_commands = [\"python3 -m unittest*\"]",
            ));
        }
        if config.workers == 0 || config.reviewers == 0 || config.max_attempts == 0 {
            return Err(Failure::usage(
                "workers, reviewers and max_attempts must be at least 1",
                "pass a positive number (e.g. --workers 2)",
            ));
        }
        if config.workers > MAX_LANES || config.reviewers > MAX_LANES {
            return Err(Failure::usage(
                format!(
                    "at most {MAX_LANES} workers and {MAX_LANES} reviewers (asked for {} and {})",
                    config.workers, config.reviewers
                ),
                format!("pass --workers and --reviewers between 1 and {MAX_LANES}"),
            ));
        }
        if config.turn_timeout.is_zero() {
            return Err(Failure::usage(
                "the turn timeout must be at least 1 second",
                "pass e.g. --turn-timeout 300",
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = FileConfig::parse(
            "workers = 3\nreviewers = 5\nturn_timeout_secs = 9\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let limits = Limits {
            workers: Some(1),
            ..Limits::default()
        };
        let config = limits.mission_config(&file).unwrap();
        assert_eq!(config.workers, 1);
        assert_eq!(config.reviewers, 5);
        assert_eq!(config.turn_timeout, Duration::from_secs(9));
        assert_eq!(config.max_attempts, MissionConfig::default().max_attempts);
    }

    #[test]
    fn unknown_key_names_the_line() {
        let err = FileConfig::parse("workers = 2\nworkerz = 3\n", Path::new("t.toml")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("workerz"), "{text}");
    }

    #[test]
    fn server_is_one_url_or_a_list() {
        let one = FileConfig::parse("server = \"http://a:1\"\n", Path::new("t.toml")).unwrap();
        assert_eq!(one.server.unwrap().to_vec(), ["http://a:1"]);
        let many = FileConfig::parse(
            "server = [\"http://a:1\", \"http://b:2\"]\nopencode_generation = \"v2\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(many.server.unwrap().to_vec(), ["http://a:1", "http://b:2"]);
        assert_eq!(many.opencode_generation.as_deref(), Some("v2"));
    }

    #[test]
    fn git_and_worker_commands_come_from_the_file_and_flags_win() {
        let file = FileConfig::parse(
            "git = \"worktree-per-lane\"\nworker_commands = [\"python3 -m unittest*\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(file.git, Some(GitChoice::WorktreePerLane));
        let config = Limits::default().mission_config(&file).unwrap();
        assert_eq!(config.worker_commands, ["python3 -m unittest*"]);
        let flags = Limits {
            no_git: true,
            ..Limits::default()
        };
        assert_eq!(flags.git_choice(), Some(GitChoice::Off));
        let saved = Limits {
            git: Some(GitChoice::Branch),
            ..Limits::default()
        };
        assert_eq!(Limits::default().over(&saved).git, Some(GitChoice::Branch));
        assert_eq!(flags.over(&saved).git, Some(GitChoice::Off));
        assert!(FileConfig::parse("git = \"sometimes\"\n", Path::new("t.toml")).is_err());
    }

    #[test]
    fn zero_workers_is_bad_usage() {
        let limits = Limits {
            workers: Some(0),
            ..Limits::default()
        };
        let err = limits.mission_config(&FileConfig::default()).unwrap_err();
        assert_eq!(
            crate::failure::describe(&err).0,
            crate::failure::code::USAGE
        );
    }
}
