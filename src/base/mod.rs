//! The ground floor: what every reader needs before it knows the file's format. Caps on what a
//! file may make depthprune allocate ([`limits`]), the symlink policy for model folders
//! ([`links`]) and the file names of a Hugging Face folder ([`hf_files`]). Nothing here imports
//! another depthprune module except [`crate::error`].

pub mod hf_files;
pub mod limits;
pub mod links;
