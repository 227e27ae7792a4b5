//! Sans-IO overlays (work in progress: see issue 4).
