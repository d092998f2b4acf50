//! Autonomy: a level A0–A5 per action class, grouped in named profiles. Config and task
//! overrides may lower a level freely; a higher level needs a higher profile (`--profile`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    A0,
    A1,
    A2,
    A3,
    A4,
    A5,
}

impl Level {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "A0" => Some(Self::A0),
            "A1" => Some(Self::A1),
            "A2" => Some(Self::A2),
            "A3" => Some(Self::A3),
            "A4" => Some(Self::A4),
            "A5" => Some(Self::A5),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::A0 => "A0 (manual)",
            Self::A1 => "A1 (assisted)",
            Self::A2 => "A2 (guarded)",
            Self::A3 => "A3 (auto low-risk)",
            Self::A4 => "A4 (auto canary)",
            Self::A5 => "A5 (autonomous)",
        }
    }
}

/// The action classes levels apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Plan,
    Fetch,
    Generate,
    Execute,
    Merge,
    Deploy,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Self::Plan,
        Self::Fetch,
        Self::Generate,
        Self::Execute,
        Self::Merge,
        Self::Deploy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Fetch => "fetch",
            Self::Generate => "generate",
            Self::Execute => "execute",
            Self::Merge => "merge",
            Self::Deploy => "deploy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A level for every action class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Levels(pub BTreeMap<Action, Level>);

impl Default for Levels {
    fn default() -> Self {
        profile("prod-conservative").unwrap_or_else(|| Self(BTreeMap::new()))
    }
}

impl Levels {
    pub fn of(&self, a: Action) -> Level {
        self.0.get(&a).copied().unwrap_or(Level::A0)
    }

    /// These levels with `overrides` applied; an override may only lower a level.
    pub fn lowered(&self, overrides: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut out = self.clone();
        for (k, v) in overrides {
            let a = Action::parse(k).ok_or_else(|| {
                format!("unknown action class `{k}` (one of: plan, fetch, generate, execute, merge, deploy)")
            })?;
            let l =
                Level::parse(v).ok_or_else(|| format!("`{k}: {v}` is not a level (A0 to A5)"))?;
            if l > self.of(a) {
                return Err(format!(
                    "`{k}: {v}` raises {k} above the profile's {}: choose a higher profile with --profile",
                    self.of(a).name()
                ));
            }
            out.0.insert(a, l);
        }
        Ok(out)
    }
}

/// The built-in profiles.
pub const PROFILES: [&str; 5] = [
    "manual",
    "assisted",
    "prod-conservative",
    "staging-aggressive",
    "exploration",
];

pub fn profile(name: &str) -> Option<Levels> {
    let all = |l: Level| {
        Action::ALL
            .iter()
            .map(|a| (*a, l))
            .collect::<BTreeMap<_, _>>()
    };
    let mut m = match name {
        "manual" => all(Level::A0),
        "assisted" => all(Level::A1),
        "prod-conservative" => all(Level::A2),
        "staging-aggressive" => all(Level::A4),
        "exploration" => all(Level::A5),
        _ => return None,
    };
    match name {
        "assisted" => {
            m.insert(Action::Deploy, Level::A0);
        }
        "prod-conservative" => {
            m.insert(Action::Merge, Level::A3);
        }
        _ => {}
    }
    Some(Levels(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_and_overrides() {
        let p = profile("prod-conservative").unwrap();
        assert_eq!(
            (p.of(Action::Generate), p.of(Action::Merge)),
            (Level::A2, Level::A3)
        );
        assert_eq!(profile("assisted").unwrap().of(Action::Deploy), Level::A0);
        let lowered = p
            .lowered(&BTreeMap::from([("merge".to_owned(), "A1".to_owned())]))
            .unwrap();
        assert_eq!(lowered.of(Action::Merge), Level::A1);
        assert_eq!(
            p.lowered(&BTreeMap::from([("merge".to_owned(), "A4".to_owned())]))
                .unwrap_err(),
            "`merge: A4` raises merge above the profile's A3 (auto low-risk): choose a higher profile with --profile"
        );
        assert!(
            p.lowered(&BTreeMap::from([("mrege".to_owned(), "A1".to_owned())]))
                .unwrap_err()
                .starts_with("unknown action class")
        );
        assert!(profile("yolo").is_none());
    }
}
