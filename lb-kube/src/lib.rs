//! The I/O adapter of lb: Kubernetes objects, the file-mode source, and the
//! controller loop that drives `lb-alloc`.
#![forbid(unsafe_code)]

pub mod objects;
pub mod source;
pub mod config;
pub mod service;
pub mod controller;
pub mod status;
