//! What each planned step does, with every word already expanded.

use kiln_recipe::instruction::{Command, Network, Security};
use kiln_recipe::mount::Mount;
use kiln_recipe::{Instruction, Span};
use std::time::Duration;

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An image reference, expanded (`alpine:3.20`, `oci-archive:base.tar`).
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// Where COPY --from and RUN --mount from= take files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The build context.
    Context,
    Stage(usize),
    Image(String),
}

/// One COPY/ADD source after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// A path or wildcard pattern in the source (context, stage or image).
    Path(String),
    /// A heredoc's content, expanded unless its delimiter was quoted.
    Heredoc { name: String, content: String },
    /// ADD of an http(s) URL.
    Url(String),
    /// ADD of a git repository.
    Git(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    pub is_add: bool,
    pub sources: Vec<CopySource>,
    /// As written after expansion; relative destinations are relative to `Step::workdir`.
    pub destination: String,
    pub from: Source,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// The command as the process will get it: shell form is already wrapped in the stage's
    /// SHELL; a heredoc-only RUN (`RUN <<EOF`) runs its heredoc as a script.
    pub argv: Vec<String>,
    /// A heredoc with its own `#!` line, run as a script file instead of `argv`.
    pub script: Option<String>,
    pub command: Command,
    pub heredocs: Vec<kiln_recipe::syntax::Heredoc>,
    pub mounts: Vec<Mount>,
    /// Stage or context each mount with a source reads from, parallel to `mounts`.
    pub mount_sources: Vec<Option<Source>>,
    pub network: Network,
    pub security: Security,
    /// Build args in scope with a value: they are in the command's environment, not the image's.
    pub build_args: Vec<(String, String)>,
}

/// A change to the image config, in Docker's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    /// `port/proto` keys, ranges already spread out.
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    /// The resolved absolute directory.
    Workdir(String),
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(Option<HealthcheckConfig>),
    OnBuild(String),
    Maintainer(String),
}

/// Docker's Healthcheck config; `None` in [`ConfigChange::Healthcheck`] is `HEALTHCHECK NONE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckConfig {
    /// `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run(RunStep),
    Copy(CopyStep),
    Config(ConfigChange),
    /// ARG: changes what later steps see, nothing in the image.
    Arg(Vec<(String, Option<String>)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    pub instruction: Instruction,
    /// The WORKDIR in effect when the step runs.
    pub workdir: String,
    /// Build args this step's expansion read, with their values, for "build arg X changed".
    pub args_used: Vec<(String, Option<String>)>,
    /// Set for a step that came from an ONBUILD trigger of the base.
    pub from_onbuild: bool,
}

impl Step {
    /// Steps that only change the config leave no layer.
    pub fn makes_layer(&self) -> bool {
        matches!(self.action, Action::Run(_) | Action::Copy(_))
    }

    pub fn span(&self) -> Span {
        self.instruction.span
    }
}
