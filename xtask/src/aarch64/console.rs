//! Reading the guest's verdicts from its console: the VM always exits 0, so the result is
//! what the scenario runner printed (`SCENARIO <name> PASS|FAIL <reason>` lines and a final
//! marker).

/// The line the runner prints after the last scenario.
pub const DONE_MARKER: &str = "=== SCENARIOS DONE";

/// One scenario's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub reason: String,
}

/// What the console showed.
#[derive(Debug, Default)]
pub struct Results {
    pub verdicts: Vec<Verdict>,
    /// Whether the runner reached its end.
    pub done: bool,
}

/// Parses one console line (the serial console ends lines with `\r\n`).
pub fn verdict(line: &str) -> Option<Verdict> {
    let rest = line
        .trim_end_matches(['\r', '\n'])
        .strip_prefix("SCENARIO ")?;
    let mut words = rest.splitn(3, ' ');
    let name = words.next().filter(|n| !n.is_empty())?.to_owned();
    let passed = match words.next()? {
        "PASS" => true,
        "FAIL" => false,
        _ => return None,
    };
    let reason = words.next().unwrap_or("").trim().to_owned();
    Some(Verdict {
        name,
        passed,
        reason,
    })
}

/// The verdicts of `lines`, with every `expected` scenario that printed none counted as
/// failed.
pub fn results<'a>(lines: impl IntoIterator<Item = &'a str>, expected: &[&str]) -> Results {
    let mut r = Results::default();
    for line in lines {
        if line.trim_end_matches(['\r', '\n']) == DONE_MARKER {
            r.done = true;
        } else if let Some(v) = verdict(line) {
            r.verdicts.push(v);
        }
    }
    for name in expected {
        if !r.verdicts.iter().any(|v| v.name == *name) {
            r.verdicts.push(Verdict {
                name: (*name).to_owned(),
                passed: false,
                reason: "no result on the console".into(),
            });
        }
    }
    r
}

impl Results {
    /// Counts of passed and failed scenarios.
    pub fn counts(&self) -> (usize, usize) {
        let passed = self.verdicts.iter().filter(|v| v.passed).count();
        (passed, self.verdicts.len() - passed)
    }

    /// True when every scenario passed and the runner finished.
    pub fn success(&self) -> bool {
        self.done && !self.verdicts.is_empty() && self.verdicts.iter().all(|v| v.passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_lines_with_and_without_reason() {
        assert_eq!(
            verdict("SCENARIO simplest PASS\r"),
            Some(Verdict {
                name: "simplest".into(),
                passed: true,
                reason: String::new()
            })
        );
        let v = verdict("SCENARIO ifunc FAIL resolver called without args").unwrap();
        assert!(!v.passed);
        assert_eq!(v.reason, "resolver called without args");
        assert_eq!(verdict("SCENARIO x MAYBE"), None);
        assert_eq!(verdict("    | SCENARIO x PASS"), None);
        assert_eq!(verdict("SCENARIO  PASS"), None);
    }

    #[test]
    fn missing_scenarios_and_marker_fail_the_run() {
        let console = [
            "boot noise",
            "SCENARIO a PASS\r",
            "SCENARIO b FAIL target died",
        ];
        let r = results(console, &["a", "b", "c"]);
        assert_eq!(r.counts(), (1, 2));
        assert!(!r.done);
        assert!(!r.success());
        assert_eq!(r.verdicts[2].reason, "no result on the console");

        let r = results(["SCENARIO a PASS", DONE_MARKER], &["a"]);
        assert!(r.success());
        let r = results(["SCENARIO a PASS"], &["a"]);
        assert!(!r.success(), "no end marker");
        let r = results([DONE_MARKER], &[]);
        assert!(!r.success(), "nothing ran");
    }
}
