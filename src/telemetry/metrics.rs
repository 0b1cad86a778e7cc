//! Metric names of the telemetry module itself. Naming: `ccass_<subsystem>_<name>_<unit>[_total]`,
//! labels bounded (dependency names, outcomes), never ids or error text.

pub const BUILD_INFO: &str = "ccass_build_info";
pub const READINESS_CHECKS_TOTAL: &str = "ccass_ops_readiness_checks_total";
pub const READINESS_CHECK_SECONDS: &str = "ccass_ops_readiness_check_seconds";
pub const DEPENDENCY_UP: &str = "ccass_ops_dependency_up";

pub(crate) fn describe_all() {
    metrics::describe_gauge!(BUILD_INFO, "always 1; labels carry the ccass version");
    metrics::describe_counter!(
        READINESS_CHECKS_TOTAL,
        "readiness probes of a dependency, by outcome (ok, failed, timed_out)"
    );
    metrics::describe_histogram!(
        READINESS_CHECK_SECONDS,
        metrics::Unit::Seconds,
        "time taken by one readiness probe of a dependency"
    );
    metrics::describe_gauge!(
        DEPENDENCY_UP,
        "1 when the last readiness probe of the dependency succeeded, else 0"
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}
