//! What abo knows of a repository, as pure functions over text: each file's language, the
//! symbols it defines and references (tree-sitter), its terms for full-text search, BM25, and
//! the ranking of a repository's files for a task (full-text, similar past changes, symbols the
//! task names, then personalised PageRank over the reference graph), each file with why it was
//! chosen.
//!
//! No IO here: the runtime reads blobs from git objects (bounded, never through the working tree,
//! redacted), the store keeps what [`facts::analyze`] found per blob, and the ranking gets the
//! store's answers as [`rank::Evidence`].

pub mod bm25;
pub mod facts;
pub mod lang;
pub mod pagerank;
pub mod rank;
pub mod symbols;
pub mod terms;
