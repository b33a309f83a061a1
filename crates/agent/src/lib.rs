//! Agent role.
