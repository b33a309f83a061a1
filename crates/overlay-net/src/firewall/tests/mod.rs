//! Tests of the firewall: the generated ruleset (pure), and real traffic
//! between network namespaces (root).

mod render;
mod ruleset_rules;
mod service_rules;

// Root tests with network namespaces and real traffic.
mod egress;
mod isolation;
mod lab;
mod lifecycle;
mod published;
mod services;
mod traffic;
