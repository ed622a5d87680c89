//! One module per `ferroflow` command: its flags and the call into the engine, report or experiments.

pub mod bench;
pub mod bench2d;
pub mod eval;
pub mod explore;
pub mod image_eval;
pub mod likelihood;
pub mod ot;
pub mod sample;
pub mod train;
pub mod w2;
