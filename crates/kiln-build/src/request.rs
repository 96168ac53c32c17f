//! A `kiln build` as its flags ask for it: the values the command line parsed, checked and
//! turned into what a [`Build`] delivers and the [`BuildOptions`] it builds with, before any
//! work starts. A wrong value is refused with the flag and the value in the message.

use crate::attest::AttestOptions;
use crate::build::{BuildOptions, Progress};
use crate::output::{self, OutputSpec};
use crate::pipeline::Build;
use crate::remote::{PullPolicy, RemoteOptions};
use crate::run::Snapshotter;
use crate::run_settings::RunSettings;
use crate::shared_cache::{CacheExport, CacheImport};
use kiln_oci::ImageName;
use kiln_plan::Platform;
use kiln_registry::Registry;
use kiln_store::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The flags of `kiln build`, as parsed (each repeated flag's values in order), not yet
/// checked.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// `-t`.
    pub tags: Vec<String>,
    /// `-o`.
    pub outputs: Vec<String>,
    /// `--push`.
    pub push: bool,
    /// `--platform` (a comma-separated list).
    pub platform: Option<String>,
    /// `--secret`.
    pub secrets: Vec<String>,
    /// `--snapshotter`.
    pub snapshotter: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`.
    pub no_cache_filter: Vec<String>,
    /// `--source-date-epoch` or `SOURCE_DATE_EPOCH`, already checked.
    pub source_date_epoch: Option<i64>,
    /// `--squash`.
    pub squash: bool,
    /// `--jobs` (`None`: one per core).
    pub jobs: Option<usize>,
    /// `--network` (`None`: the host's).
    pub network: Option<kiln_sandbox::Network>,
    /// `--add-host`.
    pub add_hosts: Vec<(String, String)>,
    /// `--ssh`.
    pub ssh: Vec<(String, PathBuf)>,
    /// `--allow` entitlements.
    pub allow: Vec<String>,
    /// `--shm-size` in bytes.
    pub shm_size: Option<u64>,
    /// `--ulimit`.
    pub ulimits: Vec<kiln_sandbox::Rlimit>,
    /// `--label`.
    pub labels: Vec<(String, String)>,
    /// `--annotation`.
    pub annotations: Vec<(String, String)>,
    /// `--provenance`.
    pub provenance: Option<String>,
    /// `--sbom`.
    pub sbom: Option<String>,
    /// `--attest`.
    pub attest: Vec<String>,
    /// `--build-arg`, already read.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--cache-to`.
    pub cache_to: Vec<String>,
    /// `--cache-from`.
    pub cache_from: Vec<String>,
    /// `--pull` (`None`: not given).
    pub pull: Option<String>,
    /// `--iidfile`.
    pub iidfile: Option<PathBuf>,
    /// `--metadata-file`.
    pub metadata_file: Option<PathBuf>,
}

/// A request whose every value was read: what [`Checked::into_build`] makes a [`Build`] of.
pub struct Checked {
    names: Vec<ImageName>,
    outputs: Vec<OutputSpec>,
    push_to: Vec<ImageName>,
    cache_to: Vec<CacheExport>,
    cache_from: Vec<CacheImport>,
    pull: Option<PullPolicy>,
    options: BuildOptions,
    attest: AttestOptions,
    iidfile: Option<PathBuf>,
    metadata_file: Option<PathBuf>,
}

/// Parses every value of a repeated flag, or says which one is wrong.
fn each<T, E: std::fmt::Display>(
    flag: &str,
    values: &[String],
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Vec<T>, String> {
    let parsed = values
        .iter()
        .map(|v| parse(v).map_err(|e| format!("{flag} {v}: {e}")));
    parsed.collect()
}

impl BuildRequest {
    /// Reads every value, the first wrong one refused as `FLAG VALUE: why`.
    pub fn check(self) -> Result<Checked, String> {
        let names = each("-t", &self.tags, ImageName::parse)?;
        let outputs = each("-o", &self.outputs, OutputSpec::parse)?;
        let options = self.options(&outputs)?;
        let push_to = output::push_destinations(&outputs, &names, self.push)?;
        let attest = self.attest_options(&outputs, !push_to.is_empty())?;
        Ok(Checked {
            push_to,
            attest,
            cache_to: each("--cache-to", &self.cache_to, CacheExport::parse)?,
            cache_from: each("--cache-from", &self.cache_from, CacheImport::parse)?,
            pull: PullPolicy::parse_flag(self.pull.as_deref())?,
            names,
            outputs,
            options,
            iidfile: self.iidfile,
            metadata_file: self.metadata_file,
        })
    }

    /// How to build: everything but the registries (see [`Checked::into_build`]).
    fn options(&self, outputs: &[OutputSpec]) -> Result<BuildOptions, String> {
        let platform = self
            .platform
            .as_deref()
            .map(Platform::parse_list)
            .transpose()
            .map(|list| list.and_then(|l| l.into_iter().next()));
        Ok(BuildOptions {
            secrets: crate::secret_flags::parse_secrets(&self.secrets)?,
            remote: RemoteOptions::default(),
            snapshotter: Snapshotter::chosen(self.snapshotter.as_deref())
                .map_err(|name| format!("--snapshotter {name}: expected auto, overlay or copy"))?,
            no_cache: self.no_cache,
            no_cache_filter: self.no_cache_filter.clone(),
            source_date_epoch: self.source_date_epoch,
            compression: output::layer_compression(outputs)?,
            platform: platform
                .map_err(|e| format!("--platform: {e}"))?
                .unwrap_or_else(Platform::host),
            squash: self.squash,
            jobs: self.jobs.unwrap_or_else(crate::pipeline::default_jobs),
            recipe_id: String::new(),
            run: RunSettings {
                network: self.network.unwrap_or(kiln_sandbox::Network::Host),
                extra_hosts: self.add_hosts.clone(),
                ssh: self.ssh.iter().cloned().collect(),
                allow_insecure: self.allow.iter().any(|a| a == "security.insecure"),
                shm_size: self.shm_size,
                ulimits: self.ulimits.clone(),
            },
            labels: self.labels.iter().cloned().collect(),
            annotations: self.annotations.iter().cloned().collect(),
        })
    }

    /// What to attest: `--provenance`, `--sbom`, `--attest`, and the defaults the outputs and
    /// a push decide (see [`crate::attest::provenance_by_default`]).
    fn attest_options(
        &self,
        outputs: &[OutputSpec],
        pushing: bool,
    ) -> Result<AttestOptions, String> {
        let (provenance, sbom) = crate::attest::read_flags(
            self.provenance.as_deref(),
            self.sbom.as_deref(),
            &self.attest,
            outputs,
            pushing,
        )?;
        Ok(AttestOptions {
            provenance,
            sbom,
            build_args: self.build_args.clone(),
            target: self.target.clone(),
            started: Some(kiln_sbom::Timestamp::now()),
            asked: self.provenance.is_some() || self.sbom.is_some() || !self.attest.is_empty(),
            ..Default::default()
        })
    }
}

impl Checked {
    /// The build, writing into `store`, telling `progress`, reaching registries (pulls,
    /// `--cache-from`/`--cache-to`, pushes) with `registry`; and the options it builds with.
    pub fn into_build<'a>(
        self,
        store: &'a Store,
        progress: &'a dyn Progress,
        registry: Arc<Registry>,
    ) -> (Build<'a>, BuildOptions) {
        let job = Build {
            store,
            progress,
            registry,
            outputs: self.outputs,
            names: self.names,
            push_to: self.push_to,
            cache_from: self.cache_from,
            cache_to: self.cache_to,
            iidfile: self.iidfile,
            metadata_file: self.metadata_file,
            attest: self.attest,
        };
        let mut options = self.options;
        options.remote = job.remote(self.pull);
        (job, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(request: BuildRequest) -> Result<Checked, String> {
        request.check()
    }

    #[test]
    fn the_first_wrong_value_is_refused_with_its_flag() {
        let bad_tag = BuildRequest {
            tags: vec!["ok:1".into(), "Bad Name".into()],
            ..BuildRequest::default()
        };
        let message = checked(bad_tag).err().unwrap_or_default();
        assert!(message.starts_with("-t Bad Name: "), "{message}");
        let bad_snapshotter = BuildRequest {
            snapshotter: Some("zfs".into()),
            ..BuildRequest::default()
        };
        assert_eq!(
            checked(bad_snapshotter).err().as_deref(),
            Some("--snapshotter zfs: expected auto, overlay or copy")
        );
        let bad_cache = BuildRequest {
            cache_from: vec!["type=s3".into()],
            ..BuildRequest::default()
        };
        let message = checked(bad_cache).err().unwrap_or_default();
        assert!(message.starts_with("--cache-from type=s3: "), "{message}");
    }

    #[test]
    fn a_platform_list_builds_with_its_first_and_a_push_attests_by_default() {
        let request = BuildRequest {
            tags: vec!["127.0.0.1:5000/app:1".into()],
            push: true,
            platform: Some("linux/arm64,linux/amd64".into()),
            jobs: Some(3),
            cache_to: vec!["type=inline".into()],
            ..BuildRequest::default()
        };
        let Ok(checked) = checked(request) else {
            panic!("a good request refused");
        };
        assert_eq!(checked.options.platform.to_string(), "linux/arm64");
        assert_eq!(checked.options.jobs, 3);
        assert_eq!(checked.push_to.len(), 1);
        // A push without --provenance gets the minimal provenance, as buildx attaches it
        // (unless the environment turns the default off).
        let by_default = crate::attest::provenance_by_default(&[], true);
        assert_eq!(checked.attest.provenance.is_some(), by_default);
        assert!(!checked.attest.asked);
        let store_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(store_dir.path()).unwrap_or_else(|e| panic!("{e}"));
        struct Quiet;
        impl Progress for Quiet {
            fn event(&self, _: crate::build::Event) {}
        }
        let registry = Arc::new(Registry::new(Default::default()));
        let (_, options) = checked.into_build(&store, &Quiet, registry);
        // --cache-to type=inline puts the cache into the image's config.
        assert!(options.remote.inline_cache);
    }
}
