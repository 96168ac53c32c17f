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
        "sha256:909d0bee445dba9bbda85d32e33e2c7aa427bc0e5a12efc328f38555d7db1ee5"
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
        "sha256:a3da34f4c4724f1581a44b62d8ddc8a9b198c84388738323f5fea5a47d461215"
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
        "sha256:0b95034fa352fde717d7e823c2a68a9b895b795a0c88031183a8bea5202b41bb"
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
        "sha256:eea848f2db07ce35dc714dcefff64d762a62bc8f3126efcab138b8edf6d2657c"
    );
    // What the filesystem after it is chains both, as the builder does.
    let mut chain = KeyHasher::new("linked-chain");
    chain.str("below", PARENT).str("layer", &key);
    assert_eq!(
        chain.finish(),
        "sha256:80e240cce5819e57d8b81b298ec3645011dee971be632e4f12cb9774d7bcd159"
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
        "sha256:8e9f2b44e8a5303cdc99eca58c00c18c2c59544bd44712f15b6e2996ca1f9719"
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
            "sha256:d8e93bee0586e91cf7342215df225404e0625042ecf36c506733f681dde6b54c",
            // LABEL
            "sha256:827de155814fff436e07ea7555a95cabf3309b9b438c849aa0a0a215a8733684",
            // USER
            "sha256:a0331b4666d82ec1f2a2ca5ae87b502f1bb945a836990441559ff4cd5561fd0e",
            // WORKDIR
            "sha256:9527cb8a4a1b79b9430b5e199079ded24415088d50dfdc85686e29247b178b7a",
            // CMD
            "sha256:1bb52d70b44ad24abaddbecfce46ddbcd553c8a4e3de4fca7d5b6bf6cd342dc9",
            // ENTRYPOINT
            "sha256:ca6b9c04ba635c02fc1b3c5361eb657e97c477d437bdfc76efcd2cfcc6c4718f",
            // EXPOSE
            "sha256:d6030a31b42ad97fa9f912189192b570c5017512dd561598f7287536ccd3b6d5",
            // HEALTHCHECK
            "sha256:6cff923a32b5ef167ba0fe37e4ac3b9c9fd2cc2cb4d97c8c95d31d7948bc015f",
            // STOPSIGNAL
            "sha256:dc9b2b25a14d438ddc0cfde329246b29111635a97181523d442f6464a401bb3f",
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
