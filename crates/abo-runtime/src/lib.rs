//! abo's runtime: the engine loop and the effects it executes (processes, git, worktrees,
//! backends, gates, landing, artifacts).

pub mod artifacts;
pub mod backends;
pub mod baseline;
pub mod cache;
pub mod change;
pub mod check;
pub mod confined;
pub mod context;
pub mod create;
pub mod deploy;
pub mod effects;
pub mod egress;
pub mod engine;
pub mod git;
pub mod knowledge;
pub mod measure;
pub mod notify;
pub mod pr;
pub mod process;
pub mod proof;
pub mod question;
pub mod redact;
pub mod sandbox;
pub mod screen;
pub mod shared;
pub mod verify_schedule;
pub mod windows;
pub mod worker;

pub use context::{Clock, Ctx, SystemClock};
pub use create::{RunOptions, create_run};
pub use engine::{Observer, Start, drive};
