//! Policy verdicts, ordered: `Allow < NeedsApproval < Deny`. Combining is `max`: the strictest wins.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    NeedsApproval,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::NeedsApproval => "needs_approval",
            Self::Deny => "deny",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict::*;

    #[test]
    fn the_strictest_wins() {
        assert_eq!([Allow, Deny, NeedsApproval].into_iter().max(), Some(Deny));
        assert_eq!(Allow.max(NeedsApproval), NeedsApproval);
        assert!(Allow < NeedsApproval && NeedsApproval < Deny);
    }
}
