//! `kiln graph`: stages, steps and their dependencies, and what the cache already holds, shown
//! without running anything.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::process::Command;

mod common;
use common::*;

const TWO_STAGES: &str = "\
FROM scratch AS base
COPY a.txt /a.txt
ENV DIR=/srv
COPY b.txt $DIR/b.txt

FROM scratch AS extra
COPY c.txt /c.txt

FROM base AS final
COPY --from=extra /c.txt /c2.txt
COPY d.txt /d.txt
";

fn two_stage_context() -> tempfile::TempDir {
    context(&[
        ("Dockerfile", TWO_STAGES),
        ("a.txt", "a\n"),
        ("b.txt", "b\n"),
        ("c.txt", "c\n"),
        ("d.txt", "d\n"),
    ])
}

fn graph(ctx: &Path, root: &Path, extra: &[&str]) -> String {
    let root = root.to_string_lossy().into_owned();
    let mut args = vec!["--root", root.as_str(), "graph"];
    args.extend_from_slice(extra);
    args.push(".");
    let run = kiln(&args, ctx, &[]);
    assert_eq!(run.status, 0, "graph failed:\n{}", run.stderr);
    run.stdout
}

/// Each step line's number and state: `(N, "CACHED" | "RUN" | "-")`.
fn states(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("  #"))
        .map(|rest| {
            let mut words = rest.split_whitespace();
            let number = words.next().unwrap().parse().unwrap();
            (number, words.next().unwrap().to_string())
        })
        .collect()
}

fn layer_states(text: &str) -> Vec<(usize, String)> {
    states(text).into_iter().filter(|(_, s)| s != "-").collect()
}

fn all(numbers: &[usize], state: &str) -> Vec<(usize, String)> {
    numbers.iter().map(|n| (*n, state.to_string())).collect()
}

/// Everything under the store, with sizes: a graph must not change it.
fn listing(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = path.symlink_metadata().unwrap();
            found.push(format!("{} {}", path.display(), meta.len()));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn shows_stages_steps_and_what_the_cache_holds() {
    let ctx = two_stage_context();
    let root = tempfile::tempdir().unwrap();
    let before = graph(ctx.path(), root.path(), &[]);
    assert!(
        before.contains("stage base (#0) FROM scratch\n"),
        "{before}"
    );
    assert!(
        before.contains("stage final (#2) FROM base  [needs: base, extra]\n"),
        "{before}"
    );
    assert!(before.contains("  #2 -  ENV DIR=/srv\n"), "{before}");
    assert!(
        before.contains("  #3 RUN  COPY b.txt $DIR/b.txt\n"),
        "{before}"
    );
    assert_eq!(layer_states(&before), all(&[1, 3, 4, 5, 6], "RUN"));
    assert!(!before.contains("not built"), "{before}");
    // Nothing was written: no layer, no cache record.
    let store = listing(root.path());
    let again = graph(ctx.path(), root.path(), &[]);
    assert_eq!(again, before);
    assert_eq!(listing(root.path()), store);

    build(ctx.path(), root.path(), &[], &[]);
    let after = graph(ctx.path(), root.path(), &[]);
    assert_eq!(layer_states(&after), all(&[1, 3, 4, 5, 6], "CACHED"));

    // b.txt feeds #3; #5 and #6 are built on it (FROM base). The other stage stays cached.
    fs::write(ctx.path().join("b.txt"), "changed\n").unwrap();
    let changed = graph(ctx.path(), root.path(), &[]);
    let expected = vec![
        (1, "CACHED".to_string()),
        (3, "RUN".to_string()),
        (4, "CACHED".to_string()),
        (5, "RUN".to_string()),
        (6, "RUN".to_string()),
    ];
    assert_eq!(layer_states(&changed), expected, "{changed}");
    // The build does what the graph said.
    let rebuilt = build(ctx.path(), root.path(), &[], &[]);
    for (number, state) in &expected {
        let line = if state == "CACHED" {
            format!("#{number} CACHED")
        } else {
            format!("#{number} running:")
        };
        assert!(
            rebuilt.stderr.contains(&line),
            "{line}:\n{}",
            rebuilt.stderr
        );
    }

    // A context file feeding only the second stage flips it and what reads it.
    fs::write(ctx.path().join("c.txt"), "other\n").unwrap();
    let third = graph(ctx.path(), root.path(), &[]);
    assert_eq!(
        layer_states(&third),
        vec![
            (1, "CACHED".to_string()),
            (3, "CACHED".to_string()),
            (4, "RUN".to_string()),
            (5, "RUN".to_string()),
            (6, "RUN".to_string()),
        ],
        "{third}"
    );
}

#[test]
fn metadata_steps_change_the_keys_after_them() {
    let ctx = two_stage_context();
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &[], &[]);
    // The expanded destination of #3 changes; #1 does not.
    let recipe = TWO_STAGES.replace("ENV DIR=/srv", "ENV DIR=/opt");
    fs::write(ctx.path().join("Dockerfile"), recipe).unwrap();
    let text = graph(ctx.path(), root.path(), &[]);
    assert_eq!(
        layer_states(&text),
        vec![
            (1, "CACHED".to_string()),
            (3, "RUN".to_string()),
            (4, "CACHED".to_string()),
            (5, "RUN".to_string()),
            (6, "RUN".to_string()),
        ],
        "{text}"
    );
}

#[test]
fn target_prunes_stages_and_lists_them() {
    let ctx = two_stage_context();
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &["--target", "extra"], &[]);
    let text = graph(ctx.path(), root.path(), &["--target", "extra"]);
    assert!(text.contains("stage extra (#1) FROM scratch\n"), "{text}");
    assert!(!text.contains("stage base"), "{text}");
    assert!(!text.contains("stage final"), "{text}");
    assert_eq!(layer_states(&text), all(&[1], "CACHED"), "{text}");
    assert!(
        text.ends_with("not built for target extra: base, final\n"),
        "{text}"
    );
    // --target base builds base alone.
    let text = graph(ctx.path(), root.path(), &["--target", "base"]);
    assert!(
        text.ends_with("not built for target base: extra, final\n"),
        "{text}"
    );
    assert_eq!(layer_states(&text), all(&[1, 3], "RUN"), "{text}");
}

#[test]
fn dot_output_is_a_digraph_with_the_dependency_edges() {
    let ctx = two_stage_context();
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &[], &[]);
    fs::write(ctx.path().join("d.txt"), "changed\n").unwrap();
    let dot = graph(ctx.path(), root.path(), &["--format", "dot"]);
    assert!(dot.starts_with("digraph kiln {\n"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    assert_eq!(dot.matches('{').count(), dot.matches('}').count(), "{dot}");
    assert_eq!(dot.matches("subgraph cluster_").count(), 3, "{dot}");
    let edges: Vec<(String, String)> = dot
        .lines()
        .filter_map(|line| {
            let (from, rest) = line.trim().split_once(" -> ")?;
            let to = rest.split([' ', ';']).next()?;
            Some((from.to_string(), to.to_string()))
        })
        .collect();
    let edge = |a: &str, b: &str| (a.to_string(), b.to_string());
    for expected in [
        // Within stages: step to next step.
        edge("s0_0", "s0_1"),
        edge("s0_1", "s0_2"),
        edge("s2_0", "s2_1"),
        // FROM base: base's last step to final's first.
        edge("s0_2", "s2_0"),
        // COPY --from=extra: extra's last step to the step that reads it.
        edge("s1_0", "s2_0"),
    ] {
        assert!(edges.contains(&expected), "{expected:?} missing:\n{dot}");
    }
    assert_eq!(edges.len(), 5, "{dot}");
    // Cached steps are filled; the changed one is not. The ENV's quotes are escaped.
    let line_of = |node: &str| {
        dot.lines()
            .find(|l| l.trim().starts_with(&format!("{node} [")))
            .unwrap()
            .to_string()
    };
    assert!(line_of("s0_0").contains("filled"), "{dot}");
    assert!(line_of("s1_0").contains("filled"), "{dot}");
    assert!(!line_of("s2_1").contains("filled"), "{dot}");
    assert!(
        line_of("s0_2").contains(r##"label="#3 COPY b.txt $DIR/b.txt""##),
        "{dot}"
    );
    if have_dot() {
        let file = ctx.path().join("graph.dot");
        fs::write(&file, &dot).unwrap();
        let out = Command::new("dot")
            .arg("-Tsvg")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dot -Tsvg refused it: {}\n{dot}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    }
}

#[test]
fn dot_labels_escape_quotes_and_backslashes() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch\nLABEL a=\"x\\\"y\" b=c\\\\d\nCOPY <<EOF /f\nline one\nEOF\n",
    )]);
    let root = tempfile::tempdir().unwrap();
    let dot = graph(ctx.path(), root.path(), &["--format", "dot"]);
    let label = dot.lines().find(|l| l.contains("LABEL")).unwrap();
    assert!(label.contains(r#"a=\"x\\\"y\" b=c\\\\d""#), "{dot}");
    if have_dot() {
        let file = ctx.path().join("graph.dot");
        fs::write(&file, &dot).unwrap();
        let out = Command::new("dot")
            .arg("-Tsvg")
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{dot}");
    }
    let text = graph(ctx.path(), root.path(), &[]);
    assert!(text.contains("  #2 RUN  COPY <<EOF /f\n"), "{text}");
}

#[test]
fn run_steps_are_keyed_on_the_config_they_see() {
    let root = busybox_store("auto");
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\nARG GREETING=hi\nENV GREETING=$GREETING\nRUN echo $GREETING > /g\nCOPY --chown=bob Dockerfile /home/\nRUN cat /g\n",
    )]);
    let before = graph(ctx.path(), root.path(), &[]);
    assert!(
        before.starts_with("stage #0 FROM busybox:test\n"),
        "{before}"
    );
    assert_eq!(layer_states(&before), all(&[3, 4, 5], "RUN"), "{before}");
    build(ctx.path(), root.path(), &[], &[]);
    let after = graph(ctx.path(), root.path(), &[]);
    assert_eq!(layer_states(&after), all(&[3, 4, 5], "CACHED"), "{after}");
    // The ENV the RUN sees changes with the build arg: every layer step runs again.
    let changed = graph(ctx.path(), root.path(), &["--build-arg", "GREETING=yo"]);
    assert_eq!(layer_states(&changed), all(&[3, 4, 5], "RUN"), "{changed}");
}

/// Graphviz's `dot`, which has no `--version` (it answers `-V`); [`skip_or_fail`] without it.
fn have_dot() -> bool {
    let found = Command::new("dot")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip_or_fail("graphviz's dot not installed (apt-get install graphviz)");
    }
    found
}
