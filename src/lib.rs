//! autorender-sync: watch local folders and upload settled files to an
//! AutoRender workspace through the multipart upload API.
//!
//! The binary is a thin shell over [`cli::main`]. The library's public
//! surface is only what the binary, the fuzz targets and the integration
//! tests use (`api`'s answer decoders, `config`, `settle`, `units`, `clock`,
//! `cli`); every other room is `pub(crate)`, so the compiler reports code
//! nothing calls.
//!
//! No `unsafe` outside [`sys`] (the one libc query rustix has no safe form of).

#![deny(unsafe_code)]

pub(crate) mod after;
pub(crate) mod agent;
pub(crate) mod anchor;
pub mod api;
pub(crate) mod app;
pub(crate) mod autostart;
pub mod cli;
pub mod clock;
pub mod config;
pub(crate) mod control;
/// The service emulator (its own crate in the workspace).
pub use autorender_emulator as emulator;
pub(crate) mod fileid;
pub(crate) mod hooks;
pub(crate) mod journal;
pub(crate) mod limiter;
pub(crate) mod logfile;
pub(crate) mod mapping;
pub(crate) mod mhl;
pub(crate) mod private;
pub(crate) mod scan;
pub(crate) mod schedule;
pub(crate) mod secrets;
pub(crate) mod sequence;
pub mod settle;
pub(crate) mod sys;
pub(crate) mod text;
pub mod units;
pub(crate) mod upload;
pub(crate) mod watch;
pub(crate) mod workspace;
