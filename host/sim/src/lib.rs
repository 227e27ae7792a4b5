//! Deterministic simulator (work in progress: see issue 4).
