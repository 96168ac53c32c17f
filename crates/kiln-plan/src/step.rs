//! What each planned step does, with every word already expanded.

use kiln_recipe::instruction::{Command, Network, Security};
use kiln_recipe::mount::Mount;
use kiln_recipe::{Instruction, Span};
use std::time::Duration;

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`: an empty filesystem.
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
    /// A stage of the recipe, by index.
    Stage(usize),
    /// An image reference, expanded.
    Image(String),
}

/// One COPY/ADD source after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// A path or wildcard pattern in the source (context, stage or image).
    Path(String),
    /// A heredoc's content, expanded unless its delimiter was quoted.
    Heredoc {
        /// The heredoc's delimiter word.
        name: String,
        /// Its content.
        content: String,
    },
    /// ADD of an http(s) URL.
    Url(String),
    /// ADD of a git repository.
    Git(String),
}

/// A COPY or ADD, expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    /// ADD (URLs, git, archives unpacked) rather than COPY.
    pub is_add: bool,
    /// What is copied, in order.
    pub sources: Vec<CopySource>,
    /// As written after expansion; relative destinations are relative to `Step::workdir`.
    pub destination: String,
    /// Where path sources are read: the context, a stage or an image (`--from`).
    pub from: Source,
    /// `--chown=USER[:GROUP]`, names or ids, resolved in the image below.
    pub chown: Option<String>,
    /// `--chmod`, octal or symbolic (checked by [`crate::Chmod`]).
    pub chmod: Option<String>,
    /// `--link`: the layer does not depend on what is below it.
    pub link: bool,
    /// `--parents`: sources keep their directories under the destination.
    pub parents: bool,
    /// `--exclude` patterns, relative to each source.
    pub excludes: Vec<String>,
    /// `ADD --checksum`: the content a URL must have.
    pub checksum: Option<String>,
    /// `ADD --keep-git-dir`.
    pub keep_git_dir: bool,
    /// `ADD --unpack`: whether archives are unpacked (`None`: local archives are).
    pub unpack: Option<bool>,
}

/// A RUN, expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// The command as the process will get it: shell form is already wrapped in the stage's
    /// SHELL; a heredoc-only RUN (`RUN <<EOF`) runs its heredoc as a script.
    pub argv: Vec<String>,
    /// A heredoc with its own `#!` line, run as a script file instead of `argv`.
    pub script: Option<String>,
    /// The command as written (shell or exec form), for history and keys.
    pub command: Command,
    /// The heredocs the command reads, expanded unless quoted.
    pub heredocs: Vec<kiln_recipe::syntax::Heredoc>,
    /// `--mount`s, expanded.
    pub mounts: Vec<Mount>,
    /// Stage or context each mount with a source reads from, parallel to `mounts`.
    pub mount_sources: Vec<Option<Source>>,
    /// `--network`.
    pub network: Network,
    /// `--security`.
    pub security: Security,
    /// Build args in scope with a value: they are in the command's environment, not the image's.
    pub build_args: Vec<(String, String)>,
}

/// A change to the image config, in Docker's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// ENV: variables set, in order.
    Env(Vec<(String, String)>),
    /// LABEL: labels set, in order.
    Label(Vec<(String, String)>),
    /// `port/proto` keys, ranges already spread out.
    Expose(Vec<String>),
    /// VOLUME: paths declared as volumes.
    Volume(Vec<String>),
    /// USER, as written after expansion.
    User(String),
    /// The resolved absolute directory.
    Workdir(String),
    /// CMD, exec form (shell form wrapped in the SHELL).
    Cmd(Vec<String>),
    /// ENTRYPOINT, exec form (shell form wrapped in the SHELL).
    Entrypoint(Vec<String>),
    /// SHELL: the shell later shell forms run in.
    Shell(Vec<String>),
    /// STOPSIGNAL.
    StopSignal(String),
    /// HEALTHCHECK; `None` is `HEALTHCHECK NONE`.
    Healthcheck(Option<HealthcheckConfig>),
    /// ONBUILD: a trigger kept for images built on this one.
    OnBuild(String),
    /// MAINTAINER (deprecated): the author field.
    Maintainer(String),
}

/// Docker's Healthcheck config; `None` in [`ConfigChange::Healthcheck`] is `HEALTHCHECK NONE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckConfig {
    /// `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--start-interval`.
    pub start_interval: Option<Duration>,
    /// `--retries`.
    pub retries: Option<u32>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// RUN: a command whose changes become a layer.
    Run(RunStep),
    /// COPY or ADD: files into a new layer.
    Copy(CopyStep),
    /// A metadata instruction: a change to the image config, no layer.
    Config(ConfigChange),
    /// ARG: changes what later steps see, nothing in the image.
    Arg(Vec<(String, Option<String>)>),
}

/// One planned step of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub action: Action,
    /// The instruction it came from (text, span, line).
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

    /// Where the step is in the recipe.
    pub fn span(&self) -> Span {
        self.instruction.span
    }
}
