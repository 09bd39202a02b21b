//! The rescue engine: reads a possibly failing source the way GNU ddrescue does, keeping the
//! whole state in one sorted extent map (compatible with ddrescue's mapfile).
//! `map` is the state, `phases` the reader's phases, `engine` the reader/writer pipeline,
//! `hash` the verification hashes taken while copying, `sim` a simulated failing disk for tests
//! and benchmarks.
pub mod engine;
pub mod hash;
pub mod map;
mod phases;
pub mod sim;

pub use engine::{read_tolerant, run, MemTarget, Options, Outcome, RescueTarget};
pub use hash::{Hashes, VerifyResult};
pub use map::{Extent, ExtentMap, Status, Totals};
pub use sim::{Cost, SimDevice};
