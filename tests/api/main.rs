//! The integration suite: one test binary, one module per feature. Every test
//! starts the real server on 127.0.0.1:0 with a fresh SQLite file.

mod helpers;
mod realtime;
