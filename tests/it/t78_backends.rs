//! The cluster scenarios over each storage backend (filled in next).
