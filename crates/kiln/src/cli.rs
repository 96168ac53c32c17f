//! The command line, in the flags people know from `docker build` and buildx.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build OCI container images from Dockerfile recipes, with no daemon"
)]
pub struct Cli {
    /// The store: images, layers, snapshots and the build cache. Default: $KILN_ROOT, else
    /// $XDG_DATA_HOME/kiln, else ~/.local/share/kiln.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// How RUN steps are isolated: auto (the first that works here: sandbox as root with
    /// CAP_SYS_ADMIN, else userns, else chroot inside a container), sandbox, userns, chroot
    /// (inside a container only), or chroot-on-host (accepts the weaker isolation on a host).
    /// Default: $KILN_ISOLATION, else auto. Read before anything else starts
    /// (kiln_sandbox::isolation); declared here for --help. See docs/ci.md.
    #[arg(long, global = true, value_name = "MODE", value_parser = ["auto", "sandbox", "userns", "chroot", "chroot-on-host"])]
    pub isolation: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a recipe (with --check: parse, expand and plan it only).
    Build(Box<BuildArgs>),
    /// Show a recipe's stages, steps and what depends on what, and which layer steps the
    /// cache already holds; runs nothing and writes nothing.
    Graph(GraphArgs),
    /// Run a command in an image of the store, in the sandbox RUN uses; its exit code is
    /// kiln's. Changes are thrown away.
    Run(RunArgs),
    /// List the images in the store.
    Images,
    /// Show an image's manifest and config as JSON (of a multi-platform image: its index and
    /// the manifest of this machine's platform, or of --platform; with --provenance or --sbom:
    /// its attestations, from the store or, for an image the store does not name, its registry).
    Inspect {
        /// Image name (as given to -t), or a registry reference.
        image: String,
        #[command(flatten)]
        attestations: InspectAttestations,
        /// Of a multi-platform image, the platform to show (os/arch[/variant]).
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
    },
    /// Show the history of an image: one line per instruction.
    History { image: String },
    /// Give an image in the store another name.
    Tag { source: String, target: String },
    /// Remove image names from the store (the data goes with `kiln prune`).
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Write an image from the store to an archive.
    Save {
        image: String,
        /// The archive to write; `-` for standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Archive format.
        #[arg(long, value_enum, default_value_t = ArchiveKind::Oci)]
        format: ArchiveKind,
        /// Of a multi-platform image, save only this platform's image (os/arch[/variant]);
        /// without it, the whole index.
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
    },
    /// Read an image archive (OCI or docker format) into the store.
    Load {
        /// The archive to read.
        #[arg(short = 'i', long = "input", value_name = "FILE")]
        input: PathBuf,
        /// Name the image (besides the names the archive carries).
        #[arg(short = 't', long = "tag", value_name = "NAME")]
        tags: Vec<String>,
    },
    /// Remove blobs and snapshots that no named image and no cache record needs (with --all,
    /// drop the build cache first).
    Prune {
        /// Also drop the whole build cache.
        #[arg(long)]
        all: bool,
    },
    /// Pull an image from a registry into the store.
    Pull(PullArgs),
    /// Push an image of the store to a registry: to its own name, or to DEST.
    Push(PushArgs),
    /// Save credentials for a registry (in $DOCKER_CONFIG/config.json, or its credential
    /// helper), after checking them with the registry.
    Login(LoginArgs),
    /// Remove the saved credentials of a registry.
    Logout {
        /// The registry, e.g. registry.example.com:5000 (default: docker.io).
        server: Option<String>,
    },
    /// Show how much disk the store uses.
    Du,
    /// Check every blob in the store against its digest.
    Verify,
}

/// How kiln talks to registries.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Verify registries' TLS certificates and use https only (default: true, except for
    /// localhost and 127.0.0.0/8, which may use plain http or unverified TLS unless
    /// --tls-verify=true is given). --tls-verify=false allows both for every registry.
    /// Trusted CAs: the system's store (SSL_CERT_FILE, SSL_CERT_DIR) and
    /// /etc/containers/certs.d/HOST:PORT/*.crt or /etc/docker/certs.d/HOST:PORT/*.crt.
    #[arg(long = "tls-verify", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub tls_verify: Option<bool>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image, as docker names it: alpine, registry:5000/team/app:1, name@sha256:...
    pub image: String,
    /// The platform to pull from a multi-platform image. Default: this machine's.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Progress output.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image of the store.
    pub image: String,
    /// Where to push it (a registry reference; `docker://` in front is allowed). Default:
    /// the image's own name.
    pub destination: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Write the pushed manifest's digest to this file.
    #[arg(long = "digestfile", value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Progress output.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry, e.g. registry.example.com:5000 (default: docker.io).
    pub server: Option<String>,
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// The password (visible to other users of this machine in the process list: prefer
    /// --password-stdin).
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchiveKind {
    Oci,
    Docker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// The live display on a terminal, plain lines elsewhere.
    Auto,
    /// The live display: one line per running step with the tail of its output.
    Tty,
    Plain,
    /// One JSON object per line on standard error, for other tools.
    Json,
    Quiet,
}

/// What loads and plans a recipe: the same for `kiln build` and `kiln graph`.
#[derive(Debug, Clone, Args)]
pub struct RecipeArgs {
    /// The build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,

    /// The recipe; `-` reads it from standard input. Default: CONTEXT/Dockerfile.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Set a build argument: KEY=VALUE, or KEY to take the value from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,

    /// A named build context, buildx style (repeatable): NAME=DIR (a local directory, with its
    /// own .dockerignore), NAME=oci-layout://DIR[:TAG] (an OCI image layout directory) or
    /// NAME=docker-image://REF (an image of the store). `FROM NAME`, `COPY --from=NAME` and
    /// `RUN --mount=from=NAME` then take it, even where a stage has the same name.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,

    /// Build this stage and the stages it needs, not the last one.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// The platforms to build for, comma-separated (os/arch[/variant], or `local` for this
    /// machine's): linux/amd64,linux/arm64 builds one image per platform, as an image index.
    /// Default: this machine's.
    #[arg(long, value_name = "PLATFORM[,PLATFORM...]")]
    pub platform: Option<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub recipe: RecipeArgs,

    /// A secret for `RUN --mount=type=secret,id=ID` (repeatable): id=ID,src=PATH (a file) or
    /// id=ID,env=VAR (an environment variable). Its content never reaches a layer, the cache
    /// or the output; only the id is part of the cache key.
    #[arg(long = "secret", value_name = "id=ID,src=PATH|env=VAR")]
    pub secrets: Vec<String>,

    /// Only parse, expand and plan the recipe; run nothing. Exit 0 if it is valid, 1 if not.
    #[arg(long)]
    pub check: bool,

    /// Name the image in the store (repeatable): name[:tag].
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    /// Where the image goes, buildx style: type=oci|docker|tar,dest=FILE (dest=- is standard
    /// output), type=local|layers,dest=DIR; name=NAME names it inside archives. Repeatable.
    #[arg(short = 'o', long = "output", value_name = "type=TYPE,dest=PATH")]
    pub outputs: Vec<String>,

    /// Run every step, ignoring the build cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Ignore the cache for these stages only (repeatable, or comma-separated).
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,

    /// Clamp file times to this Unix time and use it as the image's creation time, for
    /// reproducible images. Default: $SOURCE_DATE_EPOCH.
    #[arg(long = "source-date-epoch", value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,

    /// Stages to build at once: independent stages of the recipe run in parallel. Default: the
    /// number of cores.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Merge the layers this recipe adds into one (the base image's layers stay as they are).
    #[arg(long)]
    pub squash: bool,

    /// Write the image ID (config digest) to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// Write build results (digests) as JSON to this file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// Progress output: plain lines, json (one event per line), or only the image ID (quiet).
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Only print the image ID (same as --progress=quiet).
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// How RUN gets a writable root: overlay, copy (a copy of the image and a walk), or auto
    /// (overlay, a copy where it cannot be mounted). Default: $KILN_SNAPSHOTTER, else auto.
    #[arg(long, value_name = "auto|overlay|copy")]
    pub snapshotter: Option<String>,

    /// When to ask registries for base images: always (what bare --pull means: even those
    /// the store holds), missing (the default: only those it does not hold), never (offline:
    /// the store only).
    #[arg(
        long,
        value_name = "always|missing|never",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "always"
    )]
    pub pull: Option<String>,

    /// Push the image to the registry of each -t name (same as -o type=registry).
    #[arg(long)]
    pub push: bool,

    /// Read build cache from here (repeatable): type=registry,ref=NAME, type=local,src=DIR,
    /// or an image name (an image built with --cache-to type=inline).
    #[arg(long = "cache-from", value_name = "type=TYPE,...")]
    pub cache_from: Vec<String>,

    /// Write the build cache here (repeatable): type=registry,ref=NAME or
    /// type=local,dest=DIR, with mode=max (every stage's layers, the default) or mode=min
    /// (the image's), cache-mounts=true to carry RUN --mount=type=cache contents (up to
    /// cache-mounts-max=SIZE, default 1g); or type=inline (in the image's config).
    #[arg(long = "cache-to", value_name = "type=TYPE,...")]
    pub cache_to: Vec<String>,

    /// The network of every RUN that does not name one: default (the host's, as kiln always
    /// gives), host, or none. A RUN's own --network wins.
    #[arg(long, value_name = "default|host|none", value_parser = network_value)]
    pub network: Option<kiln_sandbox::Network>,

    /// Add a line to every RUN's /etc/hosts (repeatable): HOST:IP.
    #[arg(long = "add-host", value_name = "HOST:IP", value_parser = add_host_value)]
    pub add_hosts: Vec<(String, String)>,

    /// Set a label on the image (repeatable): KEY=VALUE. It wins over the recipe's LABEL.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = key_value)]
    pub labels: Vec<(String, String)>,

    /// Set an annotation (repeatable): KEY=VALUE on the image manifest, or TYPE:KEY=VALUE with
    /// TYPE manifest, manifest-descriptor, index or index-descriptor (comma-separated).
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE", value_parser = annotation_value)]
    pub annotations: Vec<(String, String)>,

    /// An ssh agent that `RUN --mount=type=ssh[,id=ID]` may use (repeatable): `default` (the
    /// agent of $SSH_AUTH_SOCK) or ID=SOCKET. Without it an ssh mount fails.
    #[arg(long = "ssh", value_name = "default|ID=SOCKET", value_parser = ssh_value)]
    pub ssh: Vec<(String, PathBuf)>,

    /// Allow an entitlement (repeatable): security.insecure lets `RUN --security=insecure`
    /// run; network.host is accepted (RUN has the host's network unless --network=none).
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_parser = ["security.insecure", "network.host"])]
    pub allow: Vec<String>,

    /// Size of every RUN's /dev/shm: 64m, 1g, ... (default 64m).
    #[arg(long = "shm-size", value_name = "SIZE", value_parser = size_value)]
    pub shm_size: Option<u64>,

    /// A resource limit of every RUN (repeatable): NAME=SOFT[:HARD], e.g. nofile=1024:2048.
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]", value_parser = kiln_build::run_settings::parse_ulimit)]
    pub ulimits: Vec<kiln_sandbox::Rlimit>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub attest: AttestArgs,
}

/// `--provenance`, `--sbom`, `--attest`: supply-chain attestations (docs/attestations.md).
#[derive(Debug, Args)]
pub struct AttestArgs {
    /// Attach SLSA provenance: false, true (= mode=min), mode=min|max[,builder-id=URL].
    /// Default: mode=min when the image is pushed or written as an OCI archive, else false
    /// ($BUILDX_NO_DEFAULT_ATTESTATIONS turns the default off).
    #[arg(long, value_name = "false|true|mode=min|mode=max")]
    pub provenance: Option<String>,

    /// Attach an SPDX SBOM of the image's packages: true or false (default false).
    #[arg(long, value_name = "BOOL")]
    pub sbom: Option<String>,

    /// buildx's long form (repeatable): type=provenance[,mode=min|max] or type=sbom.
    #[arg(long = "attest", value_name = "type=provenance|sbom,...")]
    pub attest: Vec<String>,
}

/// `kiln inspect --provenance` / `--sbom`.
#[derive(Debug, Args)]
pub struct InspectAttestations {
    /// Print the image's provenance statement (in-toto, SLSA provenance v1).
    #[arg(long)]
    pub provenance: bool,

    /// Print the image's SBOM statement (in-toto, SPDX 2.3).
    #[arg(long)]
    pub sbom: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

fn network_value(value: &str) -> Result<kiln_sandbox::Network, String> {
    kiln_build::run_settings::parse_network(value)
}

/// `-e KEY=VALUE` as given, or `-e KEY` with kiln's own value (empty string = not set), as
/// `docker run -e` reads them.
fn env_value(value: &str) -> Result<String, String> {
    let key = value.split_once('=').map_or(value, |(key, _)| key);
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!("{value:?}: expected KEY=VALUE or KEY"));
    }
    if value.contains('=') {
        return Ok(value.to_string());
    }
    Ok(std::env::var(key)
        .map(|v| format!("{key}={v}"))
        .unwrap_or_default())
}

fn add_host_value(value: &str) -> Result<(String, String), String> {
    kiln_build::run_settings::parse_add_host(value)
}

fn ssh_value(value: &str) -> Result<(String, PathBuf), String> {
    kiln_build::run_settings::parse_ssh(value)
}

fn size_value(value: &str) -> Result<u64, String> {
    kiln_recipe::mount::parse_size(value)
}

/// `KEY=VALUE` with a key.
fn key_value(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, v)) if !key.is_empty() => Ok((key.to_string(), v.to_string())),
        _ => Err(format!("{value:?}: expected KEY=VALUE")),
    }
}

/// `[TYPE[,TYPE...]:]KEY=VALUE`, as buildx takes it (see [`kiln_build::annotations`]).
fn annotation_value(value: &str) -> Result<(String, String), String> {
    kiln_build::annotations::parse_flag(value).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The network: default or host (the host's), or none.
    #[arg(long, value_name = "default|host|none", value_parser = network_value)]
    pub network: Option<kiln_sandbox::Network>,
    /// Run as this user (name or uid[:gid]) instead of the image's USER.
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
    /// Set an environment variable (repeatable): KEY=VALUE, or KEY to pass kiln's own value
    /// (left out when kiln has none). It wins over the image's ENV.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]", value_parser = env_value)]
    pub env: Vec<String>,
    /// Of a multi-platform image, the platform to run (os/arch[/variant]); a foreign one runs
    /// through its qemu-user emulator (binfmt_misc). Default: this machine's.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Image name, as given to -t.
    pub image: String,
    /// The command; default: the image's ENTRYPOINT and CMD.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// One block of lines per stage.
    Text,
    /// A Graphviz digraph.
    Dot,
}

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub recipe: RecipeArgs,

    /// The SOURCE_DATE_EPOCH the build would use (it is part of every key). Default:
    /// $SOURCE_DATE_EPOCH.
    #[arg(long = "source-date-epoch", value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,
}
