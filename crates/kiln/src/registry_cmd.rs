//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`: the store and registries.

use crate::cli::{LoginArgs, ProgressMode, PullArgs, PushArgs, RegistryArgs};
use crate::progress::{Plain, Style};
use crate::recipe::{INVALID, USAGE};
use kiln_build::remote::{PullPolicy, RemoteOptions};
use kiln_build::{Event, Progress};
use kiln_oci::ImageName;
use kiln_plan::Platform;
use kiln_registry::{Registry, RegistryOptions};
use kiln_store::Store;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// The registry client the flags describe.
pub fn client(args: &RegistryArgs) -> Arc<Registry> {
    Arc::new(Registry::new(RegistryOptions {
        tls_verify: args.tls_verify != Some(false),
        tls_verify_loopback: args.tls_verify == Some(true),
        user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
        ..RegistryOptions::default()
    }))
}

/// The progress style a transfer command shows.
pub fn style(mode: ProgressMode) -> Style {
    match mode {
        ProgressMode::Json => Style::Json,
        ProgressMode::Tty => Style::Tty,
        ProgressMode::Quiet => Style::Quiet,
        ProgressMode::Plain => Style::Plain,
        ProgressMode::Auto => crate::progress::auto_style(),
    }
}

/// A destination as skopeo and buildah write it (`docker://` in front) or as docker does.
pub fn parse_destination(text: &str) -> Result<ImageName, String> {
    let bare = text.strip_prefix("docker://").unwrap_or(text);
    ImageName::parse(bare).map_err(|e| format!("{text}: {e}"))
}

pub fn pull(args: &PullArgs, root: &Path) -> ExitCode {
    let platform = match args.platform.as_deref().map(Platform::parse).transpose() {
        Ok(platform) => platform.unwrap_or_else(Platform::host),
        Err(e) => return fail(USAGE, format!("--platform: {e}")),
    };
    let name = match ImageName::parse(&args.image) {
        Ok(name) => name,
        Err(e) => return fail(USAGE, format!("{}: {e}", args.image)),
    };
    let store = match Store::open(root) {
        Ok(store) => store,
        Err(e) => return fail(INVALID, format!("store {}: {e}", root.display())),
    };
    let progress = Plain::titled(style(args.progress), "Pulling");
    let remote = RemoteOptions::new(Some(client(&args.registry)), PullPolicy::Always);
    let sink = |event| progress.event(Event::Transfer(event));
    let reference = name.to_string();
    let result = remote
        .manifest(&store, &reference, &platform, &sink)
        .and_then(|manifest| {
            remote.complete(&store, &reference, &manifest, &platform, &sink)?;
            Ok(manifest)
        });
    progress.finish();
    match result {
        Ok(manifest) => {
            if progress.style() == Style::Quiet {
                println!("{}", manifest.digest);
            } else {
                eprintln!("pulled {name}");
                println!("{}", manifest.digest);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(INVALID, e),
    }
}

pub fn push(args: &PushArgs, root: &Path) -> ExitCode {
    let destination = match &args.destination {
        Some(text) => parse_destination(text),
        None => ImageName::parse(&args.image).map_err(|e| format!("{}: {e}", args.image)),
    };
    let destination = match destination {
        Ok(name) => name,
        Err(e) => return fail(USAGE, e),
    };
    let store = match Store::open(root) {
        Ok(store) => store,
        Err(e) => return fail(INVALID, format!("store {}: {e}", root.display())),
    };
    let manifest = match find_image(&store, &args.image) {
        Ok(manifest) => manifest,
        Err(e) => return fail(INVALID, e),
    };
    let progress = Plain::titled(style(args.progress), "Pushing");
    let registry = client(&args.registry);
    let result = push_image(&registry, &store, &manifest, &destination, &progress);
    progress.finish();
    match result {
        Ok(pushed) => {
            if let Some(path) = &args.digest_file {
                if let Err(e) = std::fs::write(path, pushed.digest.as_str()) {
                    return fail(INVALID, format!("--digestfile {}: {e}", path.display()));
                }
            }
            if progress.style() != Style::Quiet {
                eprintln!("pushed {destination}");
            }
            println!("{}", pushed.digest);
            ExitCode::SUCCESS
        }
        Err(e) => fail(INVALID, e),
    }
}

/// What `kiln push` sends of an image of the store, by name (or `name@sha256:...`): a
/// multi-platform image's index when the store holds every platform's image, else (a base
/// pulled for some platforms) this machine's platform's manifest.
pub fn find_image(store: &Store, image: &str) -> Result<kiln_oci::Descriptor, String> {
    let name = ImageName::parse(image).map_err(|e| format!("{image}: {e}"))?;
    if let Ok(tagged) = store.resolve(&name.to_string()) {
        let whole = kiln_oci::media_types::is_index(&tagged.manifest.media_type)
            && store
                .missing_entries(&tagged.manifest)
                .is_ok_and(|missing| missing.is_empty());
        if whole {
            return Ok(tagged.manifest);
        }
    }
    kiln_build::lookup::find_in_store(store, &name, &Platform::host())
        .ok_or_else(|| format!("image {image:?} is not in the store ({name})"))
}

/// Pushes one image, its transfers shown by `progress`.
pub fn push_image(
    registry: &Registry,
    store: &Store,
    manifest: &kiln_oci::Descriptor,
    destination: &ImageName,
    progress: &dyn Progress,
) -> Result<kiln_oci::Descriptor, String> {
    let sink = |event| progress.event(Event::Transfer(event));
    // With the attestations `kiln build` recorded, if any: the index holding both.
    let document = kiln_build::attest::pushed_form(store, manifest).map_err(|e| e.to_string())?;
    let pushed = registry
        .push(store, &document, destination, &sink)
        .map_err(|e| format!("push {destination}: {e}"))?;
    // The store names what the registry now holds, as `docker push` needs the name first: a
    // later push to another repository of the registry can mount these blobs from it.
    if destination.tag().is_some() {
        kiln_build::remote::name_in_store(store, destination, manifest)
            .map_err(|e| format!("naming {destination} in the store: {e}"))?;
    }
    Ok(pushed)
}

pub fn login(args: &LoginArgs) -> ExitCode {
    let server = args.server.clone().unwrap_or_else(|| "docker.io".into());
    let Some(username) = args.username.clone().or_else(|| prompt("Username: ")) else {
        return fail(USAGE, "login needs -u USERNAME");
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => return fail(USAGE, "give --password or --password-stdin, not both"),
        (Some(password), false) => password.clone(),
        (None, true) => {
            let mut text = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut text) {
                return fail(
                    INVALID,
                    format!("reading the password from standard input: {e}"),
                );
            }
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        // No prompt: it would echo the password.
        (None, false) => return fail(USAGE, "login needs a password: --password-stdin (or -p)"),
    };
    if password.is_empty() {
        return fail(USAGE, "the password is empty");
    }
    let registry = client(&args.registry);
    match registry.login(&server, &username, &password) {
        Ok(()) => {
            eprintln!(
                "Login Succeeded ({})",
                kiln_registry::normalize_server(&server)
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(INVALID, e),
    }
}

/// Asks on the terminal; `None` when standard input is not one.
fn prompt(question: &str) -> Option<String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return None;
    }
    eprint!("{question}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).ok()?;
    let line = line.trim_end_matches(['\n', '\r']).to_string();
    (!line.is_empty()).then_some(line)
}

pub fn logout(server: Option<&str>) -> ExitCode {
    let server = server.unwrap_or("docker.io");
    let registry = Registry::new(RegistryOptions::default());
    match registry.logout(server) {
        Ok(true) => {
            eprintln!(
                "Removed login credentials for {}",
                kiln_registry::normalize_server(server)
            );
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!(
                "Not logged in to {}",
                kiln_registry::normalize_server(server)
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(INVALID, e),
    }
}
