//! Integration tests: the real daemon, driven through the generated gRPC client, on SQLite and
//! on a real Postgres started by the test itself.
mod bad_input;
mod flow;
mod gate_replay;
mod helpers;
mod limits;
mod reliability;
mod service;
