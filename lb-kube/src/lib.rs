//! The I/O adapter of lb: Kubernetes objects, the file-mode source, and the
//! controller loop that drives `lb-alloc`.
#![deny(unsafe_code)]

pub mod config;
pub mod controller;
pub mod metrics;
pub mod objects;
pub mod proxy;
pub mod service;
pub mod source;
pub mod speaker;
pub mod status;
