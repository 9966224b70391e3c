//! What the relay records about itself: [`stats`] (counters), [`metrics`] (latency
//! histograms and rendering the numbers it is given), [`logging`] (tracing set-up and
//! sampled logs) and [`readiness`] (why the node is not ready, if it is not).

pub mod logging;
pub mod metrics;
pub mod readiness;
pub mod stats;
