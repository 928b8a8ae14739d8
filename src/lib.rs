//! autorender-sync: watch local folders and upload settled files to an
//! AutoRender workspace through the multipart upload API.
//!
//! The binary is a thin shell over [`cli::main`]; everything else lives here
//! so tests can drive it in-process as well as through the real binary.
//!
//! No `unsafe` outside [`sys`] (the one libc query rustix has no safe form of).

#![deny(unsafe_code)]

pub mod after;
pub mod agent;
pub mod anchor;
pub mod api;
pub mod app;
pub mod autostart;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
/// The service emulator (its own crate in the workspace).
pub use autorender_emulator as emulator;
pub mod fileid;
pub mod journal;
pub mod limiter;
pub mod logfile;
pub mod mapping;
pub mod private;
pub mod scan;
pub mod schedule;
pub mod secrets;
pub mod sequence;
pub mod settle;
pub mod sys;
pub mod text;
pub mod units;
pub mod upload;
pub mod watch;
pub mod workspace;
