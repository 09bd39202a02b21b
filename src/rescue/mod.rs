//! The rescue engine: reads a possibly failing source the way GNU ddrescue does, keeping the
//! whole state in one sorted extent map (compatible with ddrescue's mapfile).
//! `map` is the state, `engine` the phases and the reader/writer pipeline, `hash` the
//! verification hashes taken while copying, `sim` a simulated failing disk for tests.
pub mod engine;
pub mod hash;
pub mod map;
pub mod sim;

pub use engine::{read_tolerant, run, MemTarget, Options, Outcome, RescueTarget};
pub use hash::{Hashes, VerifyResult};
pub use map::{Extent, ExtentMap, Status, Totals};
pub use sim::SimDevice;
