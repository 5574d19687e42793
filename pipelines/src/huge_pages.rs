//! Whether the process may get transparent huge pages (THP): off by default.
//!
//! The dataflow's state grows by small rows spread over the heap, and the allocator asks the
//! kernel for huge pages where it can. The kernel then zeroes two mebibytes at the first touch
//! of each, and a virtual machine's host backs them whole: on the bench's million keys that was
//! a fifth of the run's CPU time, in the kernel, with more memory resident and no gain in user
//! time. Like Redis and MongoDB, Tributary turns THP off for itself; `TRIBUTARY_HUGE_PAGES=on`
//! keeps the system's setting.

/// The variable that keeps the system's THP setting when set to `on`.
pub const HUGE_PAGES_VARIABLE: &str = "TRIBUTARY_HUGE_PAGES";

/// What was done, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePages {
    /// Turned off for this process.
    Disabled,
    /// Left as the system has it, as the variable asked.
    SystemSetting,
    /// Could not be turned off (not Linux, or the kernel refused); the system's setting holds.
    Unchanged,
}

/// Turns THP off for this process unless [`HUGE_PAGES_VARIABLE`] is `on`. Call before the
/// dataflow allocates: pages already faulted in keep their size.
pub fn configure() -> HugePages {
    if std::env::var(HUGE_PAGES_VARIABLE).is_ok_and(|value| value.eq_ignore_ascii_case("on")) {
        return HugePages::SystemSetting;
    }
    disable()
}

#[cfg(target_os = "linux")]
fn disable() -> HugePages {
    match rustix::thread::disable_transparent_huge_pages(true) {
        Ok(()) => HugePages::Disabled,
        Err(_) => HugePages::Unchanged,
    }
}

#[cfg(not(target_os = "linux"))]
fn disable() -> HugePages {
    HugePages::Unchanged
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn disabling_sets_the_process_flag() {
        assert_eq!(super::disable(), super::HugePages::Disabled);
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
    }
}
