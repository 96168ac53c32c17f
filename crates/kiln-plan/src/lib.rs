//! kiln-plan: a checked recipe plus build arguments → the stage graph.
//!
//! Applies ARG scoping and word expansion (with each stage's ENV), resolves stage references
//! (`FROM <stage>`, `COPY --from`, `RUN --mount=from=`), prunes what `--target` does not
//! need and orders the rest. Every step comes out with its words expanded, ready to run.

#![warn(missing_docs)]

pub mod cache_key;
pub mod chmod;
pub mod graph;
pub mod planner;
pub mod platform;
pub mod step;

pub use chmod::Chmod;
pub use planner::{plan, BaseConfig, ImageConfigs, NoImages, Plan, PlanOptions, Stage};
pub use platform::Platform;
pub use step::*;
