//! Code generated from `proto/ctp/v1/ctp.proto` (package `ctp.v1`) by `build.rs`: messages,
//! the `continual_trainer_server` trait and service, and the `continual_trainer_client`.
//! Kept in its own module so hand-written code never mixes with generated code.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("ctp.v1");

/// Encoded `FileDescriptorSet` of the API, for `tonic-reflection` (grpcurl, Postman).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ctp_descriptor");
