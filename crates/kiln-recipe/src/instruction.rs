//! The meaning layer: every [`Node`] becomes a typed [`Instruction`], or diagnostics that say
//! what is wrong with it. Values stay unexpanded ([`Word`]) because expansion needs the build
//! arguments and each stage's environment; the planner does it.

use crate::diag::{suggest, Diagnostic};
pub use crate::go_bool::parse_go_bool;
use crate::mount::parse_mount;
use crate::span::Span;
use crate::syntax::{Directives, Document, Flag, Form, Heredoc, Node, Word};
use std::time::Duration;

/// Every instruction of the Dockerfile reference.
pub const INSTRUCTIONS: [&str; 18] = [
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// A checked recipe: instructions in file order, global ARGs first.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The parser directives.
    pub directives: Directives,
    /// The instructions that passed their checks, in file order.
    pub instructions: Vec<Instruction>,
    /// Errors and warnings of the syntax and meaning layers.
    pub diagnostics: Vec<Diagnostic>,
}

impl Recipe {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// One checked instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// What it is, with its typed arguments.
    pub kind: Kind,
    /// The instruction text with continuations joined, as history records it.
    pub original: String,
    /// From the keyword to the end of its last line.
    pub span: Span,
    /// Where the keyword is.
    pub keyword_span: Span,
    /// Its first line, 1-based.
    pub start_line: usize,
    /// Its last line, 1-based, inclusive.
    pub end_line: usize,
}

impl Instruction {
    /// The instruction word in upper case (`COPY`).
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

/// A command line: exec form runs the array as is; shell form goes through the image's SHELL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Exec form: a JSON array, run as is.
    Exec(Vec<String>),
    /// Shell form: the text, run through the SHELL.
    Shell(Word),
}

/// FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// The image or stage as written.
    pub image: Word,
    /// The stage name after `AS`, lower-cased as BuildKit does.
    pub name: Option<Word>,
    /// `--platform`, as written.
    pub platform: Option<Word>,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command.
    pub command: Command,
    /// Heredocs the command reads.
    pub heredocs: Vec<Heredoc>,
    /// `--mount` values as written; the planner expands and parses them.
    pub mounts: Vec<Word>,
    /// `--network`.
    pub network: Option<Network>,
    /// `--security`.
    pub security: Option<Security>,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The default: the host's network, as with `host`.
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// The default sandbox.
    Sandbox,
    /// `insecure`: extra privileges.
    Insecure,
}

/// COPY and ADD share their shape; which flags are allowed differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The sources, as written.
    pub sources: Vec<Word>,
    /// The destination, as written.
    pub destination: Word,
    /// Heredocs used as sources, by marker name.
    pub heredocs: Vec<Heredoc>,
    /// `--from`.
    pub from: Option<Word>,
    /// `--chown`.
    pub chown: Option<Word>,
    /// `--chmod`.
    pub chmod: Option<Word>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<Word>,
    /// ADD only.
    pub checksum: Option<Word>,
    /// ADD only.
    pub keep_git_dir: bool,
    /// ADD only: `--unpack=false` keeps a local archive as a file.
    pub unpack: Option<bool>,
    /// Whether the arguments were a JSON array.
    pub json: bool,
}

/// One `key=value` of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Word,
    /// The value, unexpanded.
    pub value: Word,
}

/// One declaration of an ARG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The argument's name.
    pub name: Word,
    /// The default as written (`ARG V=1.0` → `1.0`), expanded when the ARG is reached.
    pub default: Option<Word>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: the base's check is turned off.
    None,
    /// A check.
    Check {
        /// The command (`CMD …`).
        command: Command,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// An instruction with its typed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// FROM.
    From(From),
    /// RUN.
    Run(Run),
    /// CMD.
    Cmd(Command),
    /// ENTRYPOINT.
    Entrypoint(Command),
    /// SHELL (a JSON array).
    Shell(Vec<String>),
    /// LABEL.
    Label(Vec<KeyValue>),
    /// MAINTAINER.
    Maintainer(Word),
    /// EXPOSE.
    Expose(Vec<Word>),
    /// ENV.
    Env(Vec<KeyValue>),
    /// ADD.
    Add(Copy),
    /// COPY.
    Copy(Copy),
    /// VOLUME.
    Volume(Vec<Word>),
    /// USER.
    User(Word),
    /// WORKDIR.
    Workdir(Word),
    /// ARG.
    Arg(Vec<ArgDecl>),
    /// ONBUILD, with its trigger.
    Onbuild(Box<Instruction>),
    /// STOPSIGNAL.
    Stopsignal(Word),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
}

impl Kind {
    /// The instruction word in upper case.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::From(_) => "FROM",
            Kind::Run(_) => "RUN",
            Kind::Cmd(_) => "CMD",
            Kind::Entrypoint(_) => "ENTRYPOINT",
            Kind::Shell(_) => "SHELL",
            Kind::Label(_) => "LABEL",
            Kind::Maintainer(_) => "MAINTAINER",
            Kind::Expose(_) => "EXPOSE",
            Kind::Env(_) => "ENV",
            Kind::Add(_) => "ADD",
            Kind::Copy(_) => "COPY",
            Kind::Volume(_) => "VOLUME",
            Kind::User(_) => "USER",
            Kind::Workdir(_) => "WORKDIR",
            Kind::Arg(_) => "ARG",
            Kind::Onbuild(_) => "ONBUILD",
            Kind::Stopsignal(_) => "STOPSIGNAL",
            Kind::Healthcheck(_) => "HEALTHCHECK",
        }
    }
}

/// Parses recipe text into checked instructions. Never panics; everything wrong is a
/// diagnostic, and every instruction is checked so that all problems are reported at once.
pub fn parse_recipe(text: &str) -> Recipe {
    let document = crate::syntax::parse(text);
    from_document(document)
}

/// The meaning layer: checks each node of a parsed document into an instruction.
pub fn from_document(document: Document) -> Recipe {
    let Document {
        directives,
        nodes,
        mut diagnostics,
        ..
    } = document;
    let mut instructions = Vec::with_capacity(nodes.len());
    // BuildKit's casing rule asks for one casing throughout: the one most instructions use.
    let upper = nodes
        .iter()
        .filter(|n| n.keyword == n.keyword.to_ascii_uppercase())
        .count();
    let lower = nodes
        .iter()
        .filter(|n| n.keyword == n.keyword.to_ascii_lowercase())
        .count();
    let majority_upper = upper >= lower;
    for node in &nodes {
        let mut checker = Checker {
            diagnostics: &mut diagnostics,
            failed: false,
            majority_upper,
        };
        if let Some(instruction) = checker.instruction(node, false) {
            if !checker.failed {
                instructions.push(instruction);
            }
        }
    }
    Recipe {
        directives,
        instructions,
        diagnostics,
    }
}

struct Checker<'a> {
    diagnostics: &'a mut Vec<Diagnostic>,
    failed: bool,
    /// Whether most instructions of the file are upper case.
    majority_upper: bool,
}

/// The flags one instruction accepts.
struct Flags<'n> {
    node: &'n Node,
    taken: Vec<bool>,
}

impl Checker<'_> {
    fn error(&mut self, diagnostic: Diagnostic) {
        self.failed = true;
        self.diagnostics.push(diagnostic);
    }

    fn warn(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn instruction(&mut self, node: &Node, in_onbuild: bool) -> Option<Instruction> {
        if node.broken {
            self.failed = true;
            return None;
        }
        let name = node.instruction();
        let Some(&known) = INSTRUCTIONS.iter().find(|i| **i == name) else {
            let mut diagnostic = Diagnostic::error(
                node.keyword_span,
                format!("unknown instruction: {}", node.keyword),
            )
            .with_label("not a Dockerfile instruction");
            if let Some(nearest) = suggest(&node.keyword, INSTRUCTIONS) {
                diagnostic = diagnostic.with_help(format!("did you mean `{nearest}`?"));
            }
            self.error(diagnostic);
            return None;
        };
        let keyword = &node.keyword;
        let is_upper = keyword == &keyword.to_ascii_uppercase();
        let is_lower = keyword == &keyword.to_ascii_lowercase();
        if !(is_upper && self.majority_upper || is_lower && !self.majority_upper) {
            let wanted = if self.majority_upper {
                known.to_string()
            } else {
                known.to_ascii_lowercase()
            };
            let label = if is_upper || is_lower {
                "differs from the rest of the file"
            } else {
                "mixed case"
            };
            self.warn(
                Diagnostic::warning(
                    "ConsistentInstructionCasing",
                    node.keyword_span,
                    format!("instruction `{keyword}` should be written `{wanted}`, like the rest of the file"),
                )
                .with_label(label),
            );
        }
        let mut flags = Flags {
            node,
            taken: vec![false; node.flags.len()],
        };
        let kind = match known {
            "FROM" => self.from(node, &mut flags)?,
            "RUN" => self.run(node, &mut flags)?,
            "CMD" => Kind::Cmd(self.command(node, "CMD")?),
            "ENTRYPOINT" => Kind::Entrypoint(self.command(node, "ENTRYPOINT")?),
            "SHELL" => self.shell(node)?,
            "LABEL" => Kind::Label(self.key_values(node, "LABEL")?),
            "ENV" => Kind::Env(self.key_values(node, "ENV")?),
            "MAINTAINER" => {
                self.warn(
                    Diagnostic::warning(
                        "MaintainerDeprecated",
                        node.keyword_span,
                        "MAINTAINER is deprecated",
                    )
                    .with_help("use `LABEL org.opencontainers.image.authors=\"...\"` instead"),
                );
                Kind::Maintainer(self.single(node, "MAINTAINER")?)
            }
            "EXPOSE" => Kind::Expose(self.at_least_one(node, "EXPOSE")?),
            "ADD" => Kind::Add(self.copy(node, &mut flags, true)?),
            "COPY" => Kind::Copy(self.copy(node, &mut flags, false)?),
            "VOLUME" => self.volume(node)?,
            "USER" => Kind::User(self.single(node, "USER")?),
            "WORKDIR" => Kind::Workdir(self.single(node, "WORKDIR")?),
            "ARG" => self.arg(node)?,
            "ONBUILD" => self.onbuild(node, in_onbuild)?,
            "STOPSIGNAL" => Kind::Stopsignal(self.single(node, "STOPSIGNAL")?),
            _ => self.healthcheck(node, &mut flags)?,
        };
        // Whatever flag the instruction did not take is unknown to it.
        for (flag, taken) in node.flags.iter().zip(&flags.taken) {
            if !taken {
                let accepted = accepted_flags(known);
                let mut diagnostic = Diagnostic::error(
                    flag.span,
                    format!("unknown flag --{} for {known}", flag.name()),
                )
                .with_label("not accepted here");
                diagnostic = match suggest(flag.name(), accepted.iter().copied()) {
                    Some(nearest) => diagnostic.with_help(format!("did you mean `--{nearest}`?")),
                    None if accepted.is_empty() => {
                        diagnostic.with_help(format!("{known} takes no flags"))
                    }
                    None => diagnostic.with_help(format!(
                        "{known} accepts {}",
                        accepted
                            .iter()
                            .map(|f| format!("--{f}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                self.error(diagnostic);
            }
        }
        Some(Instruction {
            kind,
            original: node.original.clone(),
            span: node.span,
            keyword_span: node.keyword_span,
            start_line: node.start_line,
            end_line: node.end_line,
        })
    }

    fn from(&mut self, node: &Node, flags: &mut Flags<'_>) -> Option<Kind> {
        let platform = self.string_flag(flags, "platform");
        match node.args.as_slice() {
            [image] => Some(Kind::From(From {
                image: image.clone(),
                name: None,
                platform,
            })),
            [image, as_word, name] if as_word.text.eq_ignore_ascii_case("as") => {
                self.stage_name_lints(node, as_word, name);
                if !valid_stage_name(&name.text.to_ascii_lowercase()) {
                    self.error(
                        Diagnostic::error(name.span, format!("invalid stage name {:?}", name.text))
                            .with_label("a stage name starts with a letter and holds only letters, digits, `-`, `_` and `.`"),
                    );
                    return None;
                }
                Some(Kind::From(From {
                    image: image.clone(),
                    name: Some(Word {
                        text: name.text.to_ascii_lowercase(),
                        span: name.span,
                    }),
                    platform,
                }))
            }
            [_, second, _] => {
                self.error(
                    Diagnostic::error(
                        second.span,
                        format!("expected `AS`, found {:?}", second.text),
                    )
                    .with_help("write `FROM <image> AS <name>`"),
                );
                None
            }
            [] => {
                self.error(
                    Diagnostic::error(node.span, "FROM requires an image")
                        .with_help("write `FROM <image>` or `FROM scratch`"),
                );
                None
            }
            args => {
                let span = args
                    .iter()
                    .skip(1)
                    .fold(args[1].span, |s, a| s.join(a.span));
                self.error(
                    Diagnostic::error(span, "FROM takes an image and an optional `AS <name>`")
                        .with_label("unexpected arguments"),
                );
                None
            }
        }
    }

    fn stage_name_lints(&mut self, node: &Node, as_word: &Word, name: &Word) {
        if name.text != name.text.to_ascii_lowercase() {
            self.warn(
                Diagnostic::warning(
                    "StageNameCasing",
                    name.span,
                    format!("stage name {:?} should be lowercase", name.text),
                )
                .with_help(format!(
                    "stage names are compared in lowercase: `{}`",
                    name.text.to_ascii_lowercase()
                )),
            );
        }
        let from_upper = node.keyword == node.keyword.to_ascii_uppercase();
        let as_upper = as_word.text == as_word.text.to_ascii_uppercase();
        if from_upper != as_upper {
            self.warn(Diagnostic::warning(
                "FromAsCasing",
                as_word.span,
                format!(
                    "`{}` and `{}` keywords' casing do not match",
                    as_word.text, node.keyword
                ),
            ));
        }
        if matches!(
            name.text.to_ascii_lowercase().as_str(),
            "scratch" | "context"
        ) {
            self.warn(Diagnostic::warning(
                "ReservedStageName",
                name.span,
                format!("stage name {:?} is reserved", name.text),
            ));
        }
    }

    fn run(&mut self, node: &Node, flags: &mut Flags<'_>) -> Option<Kind> {
        let mounts = self.multi_flag(flags, "mount");
        for mount in &mounts {
            // Values with variables are checked after expansion, by the planner.
            if !mount.text.contains('$') {
                if let Err(message) = parse_mount(&mount.text) {
                    self.error(Diagnostic::error(
                        mount.span,
                        format!("invalid --mount: {message}"),
                    ));
                }
            }
        }
        let network = match self.string_flag(flags, "network") {
            None => None,
            Some(word) => match word.text.as_str() {
                "default" => Some(Network::Default),
                "none" => Some(Network::None),
                "host" => Some(Network::Host),
                other => {
                    self.error(
                        Diagnostic::error(word.span, format!("unsupported network mode {other:?}"))
                            .with_help("use --network=default, none or host"),
                    );
                    None
                }
            },
        };
        let security = match self.string_flag(flags, "security") {
            None => None,
            Some(word) => match word.text.as_str() {
                "sandbox" => Some(Security::Sandbox),
                "insecure" => Some(Security::Insecure),
                other => {
                    self.error(
                        Diagnostic::error(
                            word.span,
                            format!("unsupported security mode {other:?}"),
                        )
                        .with_help("use --security=sandbox or insecure"),
                    );
                    None
                }
            },
        };
        let command = self.command(node, "RUN")?;
        Some(Kind::Run(Run {
            command,
            heredocs: node.heredocs.clone(),
            mounts,
            network,
            security,
        }))
    }

    fn command(&mut self, node: &Node, name: &str) -> Option<Command> {
        match node.form {
            Form::Json if node.args.is_empty() && name == "RUN" => {
                self.error(
                    Diagnostic::error(
                        node.rest.span,
                        "RUN requires a command: the exec form array is empty",
                    )
                    .with_help("write `RUN [\"executable\", \"arg\"]`"),
                );
                None
            }
            Form::Json => Some(Command::Exec(
                node.args.iter().map(|a| a.text.clone()).collect(),
            )),
            Form::Text => match node.args.first() {
                Some(text) => {
                    if matches!(name, "CMD" | "ENTRYPOINT") {
                        self.warn(
                            Diagnostic::warning(
                                "JSONArgsRecommended",
                                node.rest.span,
                                format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
                            )
                            .with_help(format!("write `{name} [\"executable\", \"arg\"]`")),
                        );
                    }
                    Some(Command::Shell(text.clone()))
                }
                None => {
                    self.error(
                        Diagnostic::error(node.span, format!("{name} requires a command"))
                            .with_help(format!(
                                "write `{name} <command>` or `{name} [\"executable\", \"arg\"]`"
                            )),
                    );
                    None
                }
            },
        }
    }

    fn shell(&mut self, node: &Node) -> Option<Kind> {
        if node.form != Form::Json {
            self.error(
                Diagnostic::error(
                    node.rest.span,
                    "SHELL requires the arguments to be a JSON array",
                )
                .with_help("write `SHELL [\"/bin/sh\", \"-c\"]`"),
            );
            return None;
        }
        if node.args.is_empty() {
            self.error(Diagnostic::error(
                node.rest.span,
                "SHELL requires at least one argument",
            ));
            return None;
        }
        Some(Kind::Shell(
            node.args.iter().map(|a| a.text.clone()).collect(),
        ))
    }

    fn key_values(&mut self, node: &Node, name: &str) -> Option<Vec<KeyValue>> {
        if node.args.is_empty() {
            self.error(
                Diagnostic::error(
                    node.span,
                    format!("{name} requires at least one name=value pair"),
                )
                .with_help(format!("write `{name} name=value`")),
            );
            return None;
        }
        let mut pairs = Vec::new();
        for triple in node.args.chunks(3) {
            let [key, value, separator] = triple else {
                continue;
            };
            if separator.text.is_empty() {
                self.warn(
                    Diagnostic::warning(
                        "LegacyKeyValueFormat",
                        node.rest.span,
                        format!("legacy `{name} key value` format"),
                    )
                    .with_help(format!("write `{name} {}={}`", key.text, value.text)),
                );
            }
            if key.text.is_empty() {
                self.error(
                    Diagnostic::error(key.span, format!("{name} names can not be blank"))
                        .with_label("no name before `=`"),
                );
                return None;
            }
            if name == "ENV" {
                self.secret_lint(key);
            }
            pairs.push(KeyValue {
                key: key.clone(),
                value: value.clone(),
            });
        }
        Some(pairs)
    }

    /// Values of ARG and ENV end up in the image config and history, where secrets leak. Names
    /// are judged by their `_`-separated words, so `DB_PASSWORD` warns and `MAX_TOKENS` does not.
    fn secret_lint(&mut self, key: &Word) {
        const WORDS: [&str; 11] = [
            "apikey",
            "auth",
            "credential",
            "credentials",
            "key",
            "pass",
            "password",
            "passwd",
            "pword",
            "secret",
            "token",
        ];
        let lower = key.text.to_ascii_lowercase();
        if lower.split('_').any(|word| WORDS.contains(&word)) {
            self.warn(
                Diagnostic::warning(
                    "SecretsUsedInArgOrEnv",
                    key.span,
                    format!(
                        "do not use ARG or ENV for sensitive data ({:?}): it is kept in the image",
                        key.text
                    ),
                )
                .with_help("use `RUN --mount=type=secret` and `--secret` instead"),
            );
        }
    }

    fn single(&mut self, node: &Node, name: &str) -> Option<Word> {
        match node.args.first() {
            Some(word) => Some(word.clone()),
            None => {
                self.error(Diagnostic::error(
                    node.span,
                    format!("{name} requires exactly one argument"),
                ));
                None
            }
        }
    }

    fn at_least_one(&mut self, node: &Node, name: &str) -> Option<Vec<Word>> {
        if node.args.is_empty() {
            self.error(Diagnostic::error(
                node.span,
                format!("{name} requires at least one argument"),
            ));
            return None;
        }
        Some(node.args.clone())
    }

    fn volume(&mut self, node: &Node) -> Option<Kind> {
        let volumes = self.at_least_one(node, "VOLUME")?;
        if let Some(empty) = volumes.iter().find(|v| v.text.trim().is_empty()) {
            self.error(Diagnostic::error(
                empty.span,
                "VOLUME specified can not be an empty string",
            ));
            return None;
        }
        Some(Kind::Volume(volumes))
    }

    fn copy(&mut self, node: &Node, flags: &mut Flags<'_>, is_add: bool) -> Option<Copy> {
        let name = if is_add { "ADD" } else { "COPY" };
        let from = if is_add {
            None
        } else {
            self.string_flag(flags, "from")
        };
        let chown = self.string_flag(flags, "chown");
        let chmod = self.string_flag(flags, "chmod");
        let link = self.bool_flag(flags, "link");
        let parents = self.bool_flag(flags, "parents");
        let excludes = self.multi_flag(flags, "exclude");
        let (checksum, keep_git_dir, unpack) = if is_add {
            let checksum = self.string_flag(flags, "checksum");
            let keep = self.bool_flag(flags, "keep-git-dir");
            let unpack = flags.find(self, "unpack").map(|f| self.parse_bool(f));
            (checksum, keep, unpack.flatten())
        } else {
            (None, false, None)
        };
        if node.args.len() < 2 {
            self.error(
                Diagnostic::error(
                    node.span,
                    format!(
                        "{name} requires at least two arguments, but only {} provided",
                        node.args.len()
                    ),
                )
                .with_help(format!("write `{name} <source>... <destination>`")),
            );
            return None;
        }
        let (sources, destination) = node.args.split_at(node.args.len() - 1);
        let heredocs = node
            .heredocs
            .iter()
            .filter(|h| {
                sources
                    .iter()
                    .any(|s| heredoc_source(&s.text) == Some(h.name.as_str()))
            })
            .cloned()
            .collect();
        Some(Copy {
            sources: sources.to_vec(),
            destination: destination[0].clone(),
            heredocs,
            from,
            chown,
            chmod,
            link,
            parents,
            excludes,
            checksum,
            keep_git_dir,
            unpack,
            json: node.form == Form::Json,
        })
    }

    fn arg(&mut self, node: &Node) -> Option<Kind> {
        if node.args.is_empty() {
            self.error(
                Diagnostic::error(node.span, "ARG requires at least one argument")
                    .with_help("write `ARG NAME` or `ARG NAME=default`"),
            );
            return None;
        }
        let mut decls = Vec::new();
        for (name, default) in &node.arg_decls {
            if name.text.is_empty() {
                self.error(
                    Diagnostic::error(name.span, "ARG names can not be blank")
                        .with_label("no name before `=`"),
                );
                return None;
            }
            self.secret_lint(name);
            decls.push(ArgDecl {
                name: name.clone(),
                default: default.clone(),
            });
        }
        Some(Kind::Arg(decls))
    }

    fn onbuild(&mut self, node: &Node, in_onbuild: bool) -> Option<Kind> {
        if in_onbuild {
            self.error(Diagnostic::error(
                node.keyword_span,
                "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            ));
            return None;
        }
        let Some(trigger) = node.trigger.as_deref() else {
            self.error(
                Diagnostic::error(node.span, "ONBUILD requires an instruction to trigger")
                    .with_help("write e.g. `ONBUILD RUN make`"),
            );
            return None;
        };
        let trigger_name = trigger.instruction();
        if matches!(trigger_name.as_str(), "FROM" | "MAINTAINER") {
            self.error(Diagnostic::error(
                trigger.keyword_span,
                format!("{trigger_name} isn't allowed as an ONBUILD trigger"),
            ));
            return None;
        }
        let instruction = self.instruction(trigger, true)?;
        Some(Kind::Onbuild(Box::new(instruction)))
    }

    fn healthcheck(&mut self, node: &Node, flags: &mut Flags<'_>) -> Option<Kind> {
        let interval = self.duration_flag(flags, "interval");
        let timeout = self.duration_flag(flags, "timeout");
        let start_period = self.duration_flag(flags, "start-period");
        let start_interval = self.duration_flag(flags, "start-interval");
        let retries = match flags.find(self, "retries") {
            None => None,
            Some(flag) => match flag.value().map(str::parse::<i64>) {
                Some(Ok(n)) if n >= 0 => u32::try_from(n).ok(),
                Some(Ok(_)) => {
                    self.error(Diagnostic::error(flag.span, "--retries cannot be negative"));
                    None
                }
                _ => {
                    self.error(Diagnostic::error(
                        flag.span,
                        "--retries needs a whole number, e.g. --retries=3",
                    ));
                    None
                }
            },
        };
        let Some(kind) = node.args.first() else {
            self.error(
                Diagnostic::error(node.span, "HEALTHCHECK requires an argument")
                    .with_help("write `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD <command>`"),
            );
            return None;
        };
        match kind.text.to_ascii_uppercase().as_str() {
            "NONE" => {
                if node.args.len() > 1 {
                    self.error(Diagnostic::error(
                        node.rest.span,
                        "HEALTHCHECK NONE takes no arguments",
                    ));
                    return None;
                }
                if !node.flags.is_empty() {
                    self.error(Diagnostic::error(
                        node.flags[0].span,
                        "HEALTHCHECK NONE takes no options",
                    ));
                    return None;
                }
                Some(Kind::Healthcheck(Healthcheck::None))
            }
            "CMD" => {
                let command = if node.form == Form::Json {
                    Command::Exec(node.args[1..].iter().map(|a| a.text.clone()).collect())
                } else {
                    match node.args.get(1) {
                        Some(text) => Command::Shell(text.clone()),
                        None => {
                            self.error(
                                Diagnostic::error(
                                    node.span,
                                    "missing command after HEALTHCHECK CMD",
                                )
                                .with_help("write `HEALTHCHECK CMD <command>`"),
                            );
                            return None;
                        }
                    }
                };
                if matches!(&command, Command::Exec(args) if args.is_empty()) {
                    self.error(Diagnostic::error(
                        node.span,
                        "missing command after HEALTHCHECK CMD",
                    ));
                    return None;
                }
                Some(Kind::Healthcheck(Healthcheck::Check {
                    command,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                }))
            }
            other => {
                self.error(
                    Diagnostic::error(kind.span, format!("unknown type {other:?} in HEALTHCHECK"))
                        .with_help("use `HEALTHCHECK CMD <command>` or `HEALTHCHECK NONE`"),
                );
                None
            }
        }
    }

    fn string_flag(&mut self, flags: &mut Flags<'_>, name: &str) -> Option<Word> {
        let flag = flags.find(self, name)?;
        match flag.value() {
            Some(value) => Some(Word {
                text: value.to_string(),
                span: flag.span,
            }),
            None => {
                self.error(
                    Diagnostic::error(flag.span, format!("missing a value on flag --{name}"))
                        .with_help(format!("write `--{name}=<value>`")),
                );
                None
            }
        }
    }

    fn bool_flag(&mut self, flags: &mut Flags<'_>, name: &str) -> bool {
        flags
            .find(self, name)
            .and_then(|flag| self.parse_bool(flag))
            .unwrap_or(false)
    }

    fn parse_bool(&mut self, flag: &Flag) -> Option<bool> {
        match flag.value() {
            None => Some(true),
            Some(value) => match parse_go_bool(value) {
                Some(b) => Some(b),
                None => {
                    self.error(Diagnostic::error(
                        flag.span,
                        format!(
                            "expecting a boolean value for flag --{}, not {value:?}",
                            flag.name()
                        ),
                    ));
                    None
                }
            },
        }
    }

    fn multi_flag(&mut self, flags: &mut Flags<'_>, name: &str) -> Vec<Word> {
        let mut values = Vec::new();
        for (i, flag) in flags.node.flags.iter().enumerate() {
            if flag.name() != name {
                continue;
            }
            flags.taken[i] = true;
            match flag.value() {
                Some(value) => values.push(Word {
                    text: value.to_string(),
                    span: flag.span,
                }),
                None => self.error(Diagnostic::error(
                    flag.span,
                    format!("missing a value on flag --{name}"),
                )),
            }
        }
        values
    }

    fn duration_flag(&mut self, flags: &mut Flags<'_>, name: &str) -> Option<Duration> {
        let flag = flags.find(self, name)?;
        let Some(value) = flag.value() else {
            self.error(Diagnostic::error(
                flag.span,
                format!("missing a value on flag --{name}"),
            ));
            return None;
        };
        match parse_go_duration(value) {
            Ok(d) if d.is_zero() || d >= Duration::from_millis(1) => Some(d),
            Ok(_) => {
                self.error(Diagnostic::error(
                    flag.span,
                    format!("--{name} cannot be less than 1ms"),
                ));
                None
            }
            Err(message) => {
                self.error(
                    Diagnostic::error(
                        flag.span,
                        format!("invalid duration {value:?} for --{name}: {message}"),
                    )
                    .with_help("durations look like 30s, 1m30s or 500ms"),
                );
                None
            }
        }
    }
}

impl<'n> Flags<'n> {
    /// The flag `name`, marked as taken; a second one is an error.
    fn find(&mut self, checker: &mut Checker<'_>, name: &str) -> Option<&'n Flag> {
        let node = self.node;
        let mut found: Option<&'n Flag> = None;
        for (i, flag) in node.flags.iter().enumerate() {
            if flag.name() != name {
                continue;
            }
            self.taken[i] = true;
            if found.is_some() {
                checker.error(
                    Diagnostic::error(flag.span, format!("duplicate flag --{name}"))
                        .with_label("given again here"),
                );
            } else {
                found = Some(flag);
            }
        }
        found
    }
}

/// Flags each instruction accepts, for unknown-flag errors.
fn accepted_flags(instruction: &str) -> &'static [&'static str] {
    match instruction {
        "FROM" => &["platform"],
        "RUN" => &["mount", "network", "security"],
        "COPY" => &["from", "chown", "chmod", "link", "parents", "exclude"],
        "ADD" => &[
            "chown",
            "chmod",
            "link",
            "parents",
            "exclude",
            "checksum",
            "keep-git-dir",
            "unpack",
        ],
        "HEALTHCHECK" => &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        _ => &[],
    }
}

/// The heredoc name if a COPY/ADD source is a heredoc marker (`<<EOF`, `<<-"EOF"`).
pub fn heredoc_source(source: &str) -> Option<&str> {
    let body = source
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .strip_prefix("<<")?;
    let body = body.strip_prefix('-').unwrap_or(body);
    let name = body.trim_matches(|c| c == '"' || c == '\'');
    (!name.is_empty()).then_some(name)
}

/// Stage names: a letter, then letters, digits, `-`, `_` and `.` (BuildKit's rule).
pub fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Go's `time.ParseDuration` for non-negative values: `1h30m`, `2.5s`, `300ms`, `10us`.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text.starts_with('-') {
        return Err("durations cannot be negative".into());
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return Err(format!("expected a number at {rest:?}"));
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit".into()),
            other => return Err(format!("unknown unit {other:?}")),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| format!("number too large: {number}"))?
        };
        let mut nanos = whole.checked_mul(scale).ok_or("duration too large")?;
        let mut place = scale;
        for digit in fraction.chars().filter_map(|c| c.to_digit(10)) {
            place /= 10;
            nanos += u128::from(digit) * place;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or("duration too large")?;
    }
    if total_nanos > u128::from(u64::MAX) {
        return Err("duration too large".into());
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(text: &str) -> Recipe {
        parse_recipe(text)
    }

    fn errors(text: &str) -> Vec<String> {
        recipe(text)
            .diagnostics
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| d.message)
            .collect()
    }

    fn warnings(text: &str) -> Vec<&'static str> {
        recipe(text)
            .diagnostics
            .into_iter()
            .filter_map(|d| (!d.is_error()).then_some(d.rule).flatten())
            .collect()
    }

    fn only(text: &str) -> Kind {
        let r = recipe(text);
        assert!(!r.has_errors(), "{:?}", r.diagnostics);
        r.instructions
            .last()
            .map(|i| i.kind.clone())
            .unwrap_or(Kind::Shell(vec![]))
    }

    #[test]
    fn unknown_instruction_suggests_nearest() {
        let r = recipe("FROM a\nCOPPY x y\n");
        let d = r.diagnostics.iter().find(|d| d.is_error()).cloned();
        let d = d.unwrap_or_else(|| Diagnostic::error(Span::default(), ""));
        assert_eq!(d.message, "unknown instruction: COPPY");
        assert_eq!(d.help.as_deref(), Some("did you mean `COPY`?"));
    }

    #[test]
    fn instruction_names_are_case_insensitive() {
        assert!(matches!(only("from a\nworkdir /x\n"), Kind::Workdir(_)));
    }

    #[test]
    fn from_with_platform_and_name() {
        let Kind::From(from) = only("FROM --platform=linux/arm64 alpine AS Build\n") else {
            unreachable!()
        };
        assert_eq!(from.image.text, "alpine");
        assert_eq!(from.name.map(|n| n.text), Some("build".to_string()));
        assert_eq!(
            from.platform.map(|p| p.text),
            Some("linux/arm64".to_string())
        );
    }

    #[test]
    fn from_rejects_bad_forms() {
        assert!(!errors("FROM a b c\n").is_empty());
        assert!(!errors("FROM a AS 1abc\n").is_empty());
        assert!(!errors("FROM\n").is_empty());
        assert!(!errors("FROM a AS\n").is_empty());
    }

    #[test]
    fn unknown_flag_is_an_error_for_its_instruction() {
        assert_eq!(
            errors("FROM a\nCOPY --form=x a b\n"),
            ["unknown flag --form for COPY"]
        );
        assert!(!errors("FROM a\nADD --from=x a b\n").is_empty());
        assert!(!errors("FROM a\nCMD --doit [\"a\"]\n").is_empty());
        assert!(
            errors("FROM a\nADD --checksum=sha256:abc --keep-git-dir --link https://x/y /z\n")
                .is_empty()
        );
    }

    #[test]
    fn boolean_flags_take_go_booleans() {
        let Kind::Copy(copy) = only("FROM a\nCOPY --link=false --parents a b\n") else {
            unreachable!()
        };
        assert!(!copy.link);
        assert!(copy.parents);
        assert!(!errors("FROM a\nCOPY --link=maybe a b\n").is_empty());
    }

    #[test]
    fn duplicate_flag_is_an_error() {
        assert!(!errors("FROM a\nCOPY --from=a --from=b x y\n").is_empty());
    }

    #[test]
    fn copy_needs_source_and_destination() {
        assert!(!errors("FROM a\nCOPY onlyone\n").is_empty());
        let Kind::Copy(copy) = only("FROM a\nCOPY --exclude=*.md --exclude=x a b /dst/\n") else {
            unreachable!()
        };
        assert_eq!(copy.sources.len(), 2);
        assert_eq!(copy.destination.text, "/dst/");
        assert_eq!(copy.excludes.len(), 2);
    }

    #[test]
    fn copy_heredoc_sources() {
        let Kind::Copy(copy) = only("FROM a\nCOPY <<one <<-\"two\" /dst/\nx\none\n\ty\n\ttwo\n")
        else {
            unreachable!()
        };
        assert_eq!(copy.heredocs.len(), 2);
        assert_eq!(copy.heredocs[1].content, "y\n");
    }

    #[test]
    fn run_forms_and_flags() {
        let Kind::Run(run) =
            only("FROM a\nRUN --network=none --mount=type=cache,target=/c [\"make\"]\n")
        else {
            unreachable!()
        };
        assert_eq!(run.command, Command::Exec(vec!["make".into()]));
        assert_eq!(run.network, Some(Network::None));
        assert_eq!(run.mounts.len(), 1);
        assert!(!errors("FROM a\nRUN --network=bridge2 x\n").is_empty());
        assert!(!errors("FROM a\nRUN --security=root x\n").is_empty());
        assert!(!errors("FROM a\nRUN --mount=type=cache,sharing=maybe x\n").is_empty());
        assert!(errors("FROM a\nRUN --mount=type=cache x\n").is_empty());
        assert!(!errors("FROM a\nRUN\n").is_empty());
    }

    #[test]
    fn shell_requires_json() {
        assert!(!errors("FROM a\nSHELL /bin/bash -c\n").is_empty());
        assert_eq!(
            only("FROM a\nSHELL [\"/bin/bash\", \"-c\"]\n"),
            Kind::Shell(vec!["/bin/bash".into(), "-c".into()])
        );
    }

    #[test]
    fn healthcheck_variants() {
        assert_eq!(
            only("FROM a\nHEALTHCHECK NONE\n"),
            Kind::Healthcheck(Healthcheck::None)
        );
        let Kind::Healthcheck(Healthcheck::Check { interval, retries, start_interval, .. }) =
            only("FROM a\nHEALTHCHECK --interval=1m30s --retries=3 --start-interval=500ms CMD curl -f http://x/\n")
        else {
            unreachable!()
        };
        assert_eq!(interval, Some(Duration::from_secs(90)));
        assert_eq!(start_interval, Some(Duration::from_millis(500)));
        assert_eq!(retries, Some(3));
        assert!(!errors("FROM a\nHEALTHCHECK\n").is_empty());
        assert!(!errors("FROM a\nHEALTHCHECK CMD\n").is_empty());
        assert!(!errors("FROM a\nHEALTHCHECK CONNECT TCP 7000\n").is_empty());
        assert!(!errors("FROM a\nHEALTHCHECK --interval=5s NONE\n").is_empty());
        assert!(!errors("FROM a\nHEALTHCHECK --interval=10us CMD x\n").is_empty());
        assert!(!errors("FROM a\nHEALTHCHECK --retries=-1 CMD x\n").is_empty());
        assert!(!errors("FROM a\nHEALTHCHECK --timeout=5 CMD x\n").is_empty());
    }

    #[test]
    fn onbuild_rules() {
        let Kind::Onbuild(trigger) = only("FROM a\nONBUILD RUN make\n") else {
            unreachable!()
        };
        assert_eq!(trigger.name(), "RUN");
        assert!(!errors("FROM a\nONBUILD ONBUILD RUN x\n").is_empty());
        assert!(!errors("FROM a\nONBUILD FROM x\n").is_empty());
        assert!(!errors("FROM a\nONBUILD MAINTAINER x\n").is_empty());
        assert!(!errors("FROM a\nONBUILD\n").is_empty());
        assert!(!errors("FROM a\nONBUILD COPY --bogus a b\n").is_empty());
    }

    #[test]
    fn arg_declarations() {
        let Kind::Arg(decls) = only("ARG a b=2 c=\"x y\"\n") else {
            unreachable!()
        };
        let names: Vec<_> = decls.iter().map(|d| d.name.text.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(
            decls[2].default.as_ref().map(|d| d.text.as_str()),
            Some("\"x y\"")
        );
        assert!(!errors("ARG =x\n").is_empty());
    }

    #[test]
    fn env_and_label_checks() {
        assert!(!errors("FROM a\nENV =x\n").is_empty());
        assert!(!errors("FROM a\nLABEL\n").is_empty());
        assert!(warnings("FROM a\nENV a b\n").contains(&"LegacyKeyValueFormat"));
        assert!(warnings("FROM a\nENV DB_PASSWORD=x\n").contains(&"SecretsUsedInArgOrEnv"));
    }

    #[test]
    fn lint_warnings() {
        assert!(warnings("FROM a\nMAINTAINER me\n").contains(&"MaintainerDeprecated"));
        assert!(warnings("FROM a AS Build\n").contains(&"StageNameCasing"));
        assert!(warnings("FROM a as b\n").contains(&"FromAsCasing"));
        assert!(warnings("From a\n").contains(&"ConsistentInstructionCasing"));
        assert!(warnings("FROM a\nRUN x\nrun y\n").contains(&"ConsistentInstructionCasing"));
        assert!(!warnings("from a\nrun y\n").contains(&"ConsistentInstructionCasing"));
        assert!(warnings("FROM a\nARG DB_PASSWORD\n").contains(&"SecretsUsedInArgOrEnv"));
        assert!(!warnings("FROM a\nARG MAX_TOKENS\n").contains(&"SecretsUsedInArgOrEnv"));
        assert!(warnings("FROM a\nCMD run me\n").contains(&"JSONArgsRecommended"));
        assert!(warnings("FROM a\nRUN a \\\n\n b\n").contains(&"NoEmptyContinuation"));
    }

    #[test]
    fn arg_spans_survive_continuations() {
        // Found by the fuzzer: the name used to be located by arithmetic on the joined text.
        let text = "ARG a\\\nPASSWD\u{2713}=x\nFROM a\n";
        let r = recipe(text);
        for d in &r.diagnostics {
            assert!(
                text.is_char_boundary(d.span.start) && text.is_char_boundary(d.span.end),
                "{d:?}"
            );
        }
        let Kind::Arg(decls) = &r.instructions[0].kind else {
            unreachable!()
        };
        assert_eq!(&text[decls[0].name.span.range()], "a\\\nPASSWD\u{2713}");
        assert_eq!(
            decls[0].default.as_ref().map(|d| &text[d.span.range()]),
            Some("x")
        );
    }

    #[test]
    fn one_problem_gives_one_error() {
        assert_eq!(errors("FROM a\nENV PATH\n").len(), 1);
        assert_eq!(errors("FROM a\nSHELL [\"a\", 1]\n").len(), 1);
        assert_eq!(errors("FROM a\nCOPY [1, 2]\n").len(), 1);
        assert_eq!(errors("FROM a\nRUN []\n").len(), 1);
    }

    #[test]
    fn all_errors_are_reported() {
        assert_eq!(
            errors("FROM a\nCOPPY a b\nRUNN x\nCOPY --bad a b\n").len(),
            3
        );
    }

    #[test]
    fn volume_rejects_empty() {
        assert!(!errors("FROM a\nVOLUME [\"\"]\n").is_empty());
        assert_eq!(only("FROM a\nVOLUME /a /b\n").name(), "VOLUME");
    }

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Ok(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5x").is_err());
        assert!(parse_go_duration("-5s").is_err());
        assert!(parse_go_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn stage_name_rule() {
        assert!(valid_stage_name("build-1.x_y"));
        assert!(!valid_stage_name("1build"));
        assert!(!valid_stage_name("bu ild"));
        assert!(!valid_stage_name(""));
    }
}
