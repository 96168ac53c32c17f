//! The one way a unit test here gives up for want of root or xattr support: "skipped: WHY",
//! or, under `KILN_REQUIRE_ALL=1` (as `.ci/run` sets), a failure.

/// Prints "skipped: WHY" (the caller then returns), or panics under `KILN_REQUIRE_ALL=1`.
pub(crate) fn skip_or_fail(why: &str) {
    assert!(
        std::env::var("KILN_REQUIRE_ALL").map_or(true, |v| v != "1"),
        "KILN_REQUIRE_ALL=1 and this test cannot run: {why}"
    );
    eprintln!("skipped: {why}");
}
