//! What a triggered rule asks for: the `action` of a rule and of each decision it makes.

/// What a triggered rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Block the target (Envoy answers 403).
    Deny,
    /// Rate-limit the target (Envoy answers 429 with Retry-After).
    Throttle,
    /// Only notify; nothing is pushed to Envoy.
    Alert,
}

impl Action {
    /// Every action, in the order error messages list them.
    pub(crate) const ALL: [Action; 3] = [Action::Deny, Action::Throttle, Action::Alert];

    /// The spelling used in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Throttle => "throttle",
            Action::Alert => "alert",
        }
    }

    /// Parses the rules file's spelling (exact, lower case); `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// `deny, throttle, alert`: the accepted spellings, for error messages.
    pub(crate) fn choices() -> String {
        Action::ALL.map(Action::as_str).join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_parses_from_its_own_spelling() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(
            Action::parse("Deny"),
            None,
            "the rules file spells actions in lower case"
        );
    }
}
