//! What the tests of autorender-sync share: the real binary
//! ([`bin`]), the real emulator on 127.0.0.1:0 ([`Emulator`]), temp dirs
//! with a config ([`Sandbox`]), background agents ([`AgentProcess`]),
//! waiting on conditions with deadlines (never bare sleeps), and a private
//! PostgreSQL cluster for the fleet's tests ([`postgres`]), and a real
//! Secret Service on a private session bus ([`keyring`]).

mod emulator;
pub mod keyring;
pub mod postgres;
mod process;
mod sandbox;

pub use emulator::*;
pub use process::*;
pub use sandbox::*;
