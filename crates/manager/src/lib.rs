//! Manager role.
