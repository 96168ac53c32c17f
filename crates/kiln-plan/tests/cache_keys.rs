//! Golden cache keys: the key of a fixed step of each kind, pinned. Keys travel between
//! machines through `--cache-from`, so any change here must be deliberate: when one of these
//! fails, either undo the change or bump `KEY_SCHEME` and update the values below.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_plan::cache_key::{
    build_arg_digest, env_digest, instruction_digest, written_by_other_scheme, KeyHasher, KeyPart,
    LayerCompression, StepKey, StepKind, KEY_SCHEME, SCHEME_PART,
};
use kiln_plan::{plan, Action, PlanOptions, Platform, Step};
use kiln_recipe::parse_recipe;
use std::collections::BTreeMap;

const PARENT: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const CONTENT: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// The steps of a one-stage recipe, planned for linux/amd64 with `ARG V=1`.
fn steps(recipe: &str) -> Vec<Step> {
    let recipe = parse_recipe(recipe);
    let options = PlanOptions {
        build_args: BTreeMap::from([("V".to_string(), "1".to_string())]),
        target_platform: Platform::parse("linux/amd64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        ..PlanOptions::default()
    };
    let plan = plan(&recipe, &options);
    assert!(!plan.has_errors(), "{:?}", plan.diagnostics);
    plan.stages.last().unwrap().steps.clone()
}

/// The recipe's last step (an `ARG` before it is a step too).
fn last_step(recipe: &str) -> Step {
    steps(recipe).pop().unwrap()
}

/// The parts every layer step ends its common section with, as the builder adds them.
fn common(key: &mut StepKey, step: &Step) {
    for (name, value) in &step.args_used {
        key.push(KeyPart::BuildArg {
            name: name.clone(),
            value_digest: build_arg_digest(value.as_deref()),
        });
    }
    key.push(KeyPart::Compression(LayerCompression::Gzip(6)))
        .push(KeyPart::Epoch(Some(0)));
}

fn copy_key(step: &Step, inputs: Vec<KeyPart>) -> String {
    let Action::Copy(copy) = &step.action else {
        panic!("not a copy: {step:?}");
    };
    let mut key = StepKey::new(StepKind::Layer);
    key.push(if copy.link {
        KeyPart::LinkedParent
    } else {
        KeyPart::Parent(PARENT.to_string())
    })
    .push(KeyPart::Instruction(instruction_digest(step)));
    common(&mut key, step);
    for part in inputs {
        key.push(part);
    }
    key.finish().0
}

#[test]
fn copy_key_is_pinned() {
    let step = last_step("FROM scratch\nARG V\nCOPY --chmod=644 a.txt src/ /app/\n");
    let key = copy_key(
        &step,
        vec![
            KeyPart::ContextSource {
                pattern: "a.txt".to_string(),
                digest: CONTENT.to_string(),
            },
            KeyPart::ContextFile {
                path: "a.txt".to_string(),
                digest: CONTENT.to_string(),
            },
        ],
    );
    assert_eq!(
        key,
        "sha256:750ac3606f52114628e66ec1d9c0a5fe58244fd5918bf07d48dfafa35b7b08b7"
    );
}

#[test]
fn add_key_is_pinned() {
    let steps = steps(
        "FROM scratch\nADD --checksum=sha256:2222222222222222222222222222222222222222222222222222222222222222 https://example.invalid/a.tar.gz /a/\nADD https://example.invalid/b /b\n",
    );
    let checked = copy_key(
        &steps[0],
        vec![KeyPart::UrlChecksum {
            url: "https://example.invalid/a.tar.gz".to_string(),
            checksum: CONTENT.to_string(),
        }],
    );
    assert_eq!(
        checked,
        "sha256:5e44e5d8395ca7e315e4806cbaff7c52077c50283df067b6b989a6b53f00a9ae"
    );
    let downloaded = copy_key(
        &steps[1],
        vec![KeyPart::UrlContent {
            url: "https://example.invalid/b".to_string(),
            digest: CONTENT.to_string(),
            file_name: "b".to_string(),
            mtime: Some(1_700_000_000),
        }],
    );
    assert_eq!(
        downloaded,
        "sha256:4c912f2876bb8320de1c4a436b58c135ac7f3c90081f717e7cb6b5606ece09ff"
    );
}

#[test]
fn linked_copy_key_is_pinned() {
    let step = last_step("FROM scratch\nCOPY --link a.txt /a.txt\n");
    let input = || {
        vec![KeyPart::ContextSource {
            pattern: "a.txt".to_string(),
            digest: CONTENT.to_string(),
        }]
    };
    let key = copy_key(&step, input());
    assert_eq!(
        key,
        "sha256:e07ea35d87bd4f016758f3ff26875305ef2e953cbf2d0b3f4a33294c2555ab67"
    );
    // What the filesystem after it is chains both, as the builder does.
    let mut chain = KeyHasher::new("linked-chain");
    chain.str("below", PARENT).str("layer", &key);
    assert_eq!(
        chain.finish(),
        "sha256:edc14d901a6f1c54dc73721b1af03cb593b480ede760f17ba966c85b934952ba"
    );
}

#[test]
fn run_with_mounts_key_is_pinned() {
    let step = last_step(
        "FROM scratch\nARG V\nRUN --mount=type=cache,target=/root/.cache,id=c,sharing=locked \\\n    --mount=type=bind,source=src,target=/src \\\n    --mount=type=secret,id=tok,required=true \\\n    --network=none make V=$V\n",
    );
    let mut key = StepKey::new(StepKind::Run);
    key.push(KeyPart::Parent(PARENT.to_string()))
        .push(KeyPart::Instruction(instruction_digest(&step)))
        .push(KeyPart::Env(env_digest(&[
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ])))
        .push(KeyPart::User("1000:1000".to_string()))
        .push(KeyPart::Workdir("/work".to_string()));
    common(&mut key, &step);
    key.push(KeyPart::MountContext {
        index: 1,
        path: "src".to_string(),
        digest: CONTENT.to_string(),
    });
    assert_eq!(
        key.finish().0,
        "sha256:80fcf1f34e73c7df1059002844d2a37a4484512d88a436cf09894e7ac1308a5b"
    );
}

#[test]
fn metadata_instruction_keys_are_pinned() {
    let steps = steps(
        "FROM scratch\nENV A=1 B=2\nLABEL x=y\nUSER app\nWORKDIR /w\nCMD [\"run\"]\nENTRYPOINT [\"/e\"]\nEXPOSE 80/tcp\nHEALTHCHECK --interval=5s CMD true\nSTOPSIGNAL SIGTERM\n",
    );
    let keys: Vec<String> = steps.iter().map(instruction_digest).collect();
    assert_eq!(
        keys,
        [
            // ENV
            "sha256:be29eee77ff7d5c9e00036fddb6baea32d1c79739eb42d7fc8e9785f7daf2697",
            // LABEL
            "sha256:4f9dd70a55fc5a2b9f3f55bb31f58b6fa8b6fd542817dc23166b2bd52c9f483b",
            // USER
            "sha256:7c8cc9e020a96b9754f39ed238281fd21848ff68ff29a383bbcd1854632aac70",
            // WORKDIR
            "sha256:0b2b0e9cda30e98edd84c494feb2bfca14d3acc7b6c51e7cadd5aae165cc4b80",
            // CMD
            "sha256:6619a098a81cf6230794cb50dd22a21ad4a8d222fa6117cf219384f448d5bb4b",
            // ENTRYPOINT
            "sha256:a7324f7f565964309c58615a88e1817e38fa2c4ea6863788cf000e095c5df711",
            // EXPOSE
            "sha256:86bb6cc7343f09b948e30c804c196ac2d073e9583c062865b7e24c81c0c99956",
            // HEALTHCHECK
            "sha256:ccb73caee1428865ee33ffe7bea1909dcca53864f708a0fdc2552a9bbc6ac672",
            // STOPSIGNAL
            "sha256:390d7991c5ffe11b760a9ecd4c8a35f929d79d1f29cbe751688d28ff674c2848",
        ]
    );
}

#[test]
fn a_key_covers_the_scheme() {
    // The same parts under the current scheme give the recorded scheme first.
    let (_, parts) = StepKey::new(StepKind::Run).finish();
    assert_eq!(parts[0], (SCHEME_PART.to_string(), KEY_SCHEME.to_string()));
    assert!(!written_by_other_scheme(&parts));
    // A record from before the scheme existed, or from another scheme, is from another kiln.
    assert!(written_by_other_scheme(&[(
        "parent".to_string(),
        PARENT.to_string()
    )]));
    assert!(written_by_other_scheme(&[(
        SCHEME_PART.to_string(),
        "1".to_string()
    )]));
}

#[test]
fn part_values_have_spelled_out_encodings() {
    let shown = |part: KeyPart| (part.name(), part.value());
    assert_eq!(
        shown(KeyPart::Compression(LayerCompression::Gzip(6))),
        ("compression".to_string(), "gzip level 6".to_string())
    );
    assert_eq!(
        shown(KeyPart::Compression(LayerCompression::Zstd(-3))).1,
        "zstd level -3"
    );
    assert_eq!(
        shown(KeyPart::Compression(LayerCompression::None)).1,
        "none"
    );
    assert_eq!(shown(KeyPart::Epoch(None)).1, "");
    assert_eq!(shown(KeyPart::Chown { uid: 1, gid: 2 }).1, "1:2");
    assert_eq!(
        shown(KeyPart::UrlContent {
            url: "https://h/x".to_string(),
            digest: CONTENT.to_string(),
            file_name: "x".to_string(),
            mtime: None,
        }),
        (
            "url https://h/x".to_string(),
            format!("{CONTENT} x mtime none")
        )
    );
    assert_eq!(
        shown(KeyPart::MountContext {
            index: 2,
            path: ".".to_string(),
            digest: CONTENT.to_string()
        })
        .0,
        "mount 2 source ."
    );
}
