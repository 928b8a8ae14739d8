//! Integration tests: one binary, the real `autorender-sync` executable
//! against the real emulator on loopback.

mod agent;
mod browser;
mod cli;
mod config_corpus;
mod control;
mod damage;
mod emulator;
mod faults;
mod first_run;
mod first_week;
mod fleet;
mod harness;
mod hooks;
mod hostile;
mod keyring;
mod lifecycle;
mod lookalike;
mod mhl;
mod mirror;
mod newcomer;
mod outcomes;
mod pipe;
mod policies;
mod promises;
mod properties;
mod protocol;
mod round3;
mod sets;
mod shapes;
mod trust;
mod upload;
