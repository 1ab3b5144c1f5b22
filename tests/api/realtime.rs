//! Realtime: see issue 3.
