//! Prints the CEL expression the filter evaluates once per request with the default
//! configuration, so that `make profile` can measure it alone in the probe filter.

fn main() {
    let default = warden_filter::config::Config::default();
    let read_metadata = !default.identity.jwt_metadata_namespace.is_empty();
    println!(
        "{}",
        warden_filter::attributes::Plan::new(read_metadata).fast_expression()
    );
}
