//! (issue 20, being built)
