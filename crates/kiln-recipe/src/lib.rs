//! kiln-recipe: Dockerfile text → a checked recipe.
//!
//! Two layers: [`syntax`] splits text into nodes exactly as BuildKit's parser does (checked
//! against BuildKit's own test files through [`dump`]); [`instruction`] gives every node its
//! meaning and checks it. [`expand`] is Docker's word expansion, applied later by the planner
//! because it needs the build arguments and the environment of each stage.

#![warn(missing_docs)]

pub mod diag;
pub mod dump;
pub mod expand;
pub mod go_bool;
pub mod span;
pub mod syntax;

pub use diag::{CheckPolicy, Diagnostic, Severity};
pub use span::{LineIndex, Span};
pub use syntax::{parse, Document, Node};
pub mod instruction;
pub mod mount;

pub use instruction::{parse_recipe, Instruction, Kind, Recipe};
