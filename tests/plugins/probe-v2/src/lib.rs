//! Test fixture `probe`, generation 2 (see `../probe.rs`).
#![allow(missing_docs)]

/// Which build of the fixture this is; shows in every answer's cost.
pub const GENERATION: u32 = 2;

include!("../../probe.rs");
