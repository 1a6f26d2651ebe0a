//! The ground floor: what every reader needs before it knows the file's format. Caps on what a
//! file may make depthprune allocate ([`limits`]), the symlink policy for model folders
//! ([`links`]), the file names of a Hugging Face folder ([`hf_files`]), the rule that an output
//! never is, holds or lies inside an input ([`guard`]) and the flag that asks a long job to stop
//! between steps ([`cancel`]). Nothing here imports another depthprune module except
//! [`crate::error`].

pub mod cancel;
pub mod guard;
pub mod hf_files;
pub mod limits;
pub mod links;
