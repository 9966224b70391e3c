//! Operations: what the people running the relay use. [`admin`] is the admin API
//! (`docs/ADMIN.md`), [`exposition`] gathers the node's numbers into the `/metrics` page
//! (`docs/METRICS.md`), and [`probes`] answers `/healthz`, `/readyz` and `/metrics` on
//! either listener.

pub mod admin;
pub mod exposition;
pub mod probes;
