//! Where an agent CLI's API key is while it runs, and the endpoint it talks to.
//!
//! `credentials: proxy` (the default but for goose): abo's egress proxy holds the key and adds the
//! provider's header (`x-api-key` for Anthropic, `Authorization: Bearer` for OpenAI-compatible
//! servers) to the requests for the backend's endpoint; the CLI's key variable holds only
//! [`PLACEHOLDER`](crate::egress::PLACEHOLDER), and no other key variable of the CLI is passed.
//! `credentials: env`: the CLI reads the key from its environment, as without abo. The proxy
//! mode needs the sandbox (the proxy is the agent's only way out) and a key to hold: without one
//! the CLI uses its own login, in its own HOME.

use abo_core::config::{ApiKind, Credentials, SandboxMode};
use abo_core::spec::BackendSpec;

use crate::egress::{AuthHeader, Held, PLACEHOLDER};
use crate::sandbox::Keys;

/// An endpoint, from a base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `scheme://host[:port]/...`; `None` for a URL that is not http or https.
    pub fn parse(url: &str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let authority = rest.split(['/', '?', '#']).next()?;
        let authority = authority.rsplit('@').next()?;
        let (host, port) = crate::egress::split_host_port(authority);
        if host.is_empty() {
            return None;
        }
        Some(Self {
            https,
            port: port.unwrap_or(if https { 443 } else { 80 }),
            host,
        })
    }

    /// As an entry of `sandbox.agent_hosts`: `host:port`, an IPv6 address in brackets.
    pub fn entry(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What an agent attempt does with its key.
#[derive(Debug)]
pub struct Plan {
    /// The backend's endpoint (its `base_url`, else its provider's), added to the allowlist.
    pub endpoint: Option<Endpoint>,
    /// The key the proxy adds, if it holds one.
    pub held: Option<Held>,
    /// Variables set on the agent (the placeholder, or the key read from `api_key_env`).
    pub env: Vec<(String, String)>,
    pub keys: Keys,
    /// The mode in effect, for `abo doctor`.
    pub mode: Credentials,
    /// Why, in a few words.
    pub detail: String,
}

/// The plan for `backend` under `sandbox`, with the value of a variable given by `lookup`.
pub fn plan(
    backend: &BackendSpec,
    sandbox: SandboxMode,
    lookup: impl Fn(&str) -> Option<String>,
) -> Plan {
    let BackendSpec::Agent {
        agent,
        model,
        base_url,
        api_key_env,
        credentials,
        ..
    } = backend
    else {
        return Plan {
            endpoint: None,
            held: None,
            env: Vec::new(),
            keys: Keys::Passed,
            mode: Credentials::Env,
            detail: "not an agent".into(),
        };
    };
    let provider = agent.provider(model.as_deref());
    let endpoint = base_url
        .as_deref()
        .or(provider.map(ApiKind::default_base_url))
        .and_then(Endpoint::parse);
    let mut p = Plan {
        endpoint: endpoint.clone(),
        held: None,
        env: Vec::new(),
        keys: Keys::Passed,
        mode: Credentials::Env,
        detail: String::new(),
    };
    let Some(provider) = provider else {
        p.detail = format!(
            "{} reads its provider and key from its own configuration",
            agent.as_str()
        );
        return p;
    };
    // The variable the CLI reads, and the one abo reads the key from.
    let var = provider.default_key_env();
    let source = api_key_env.as_deref().unwrap_or(var);
    let key = lookup(source).filter(|k| !k.is_empty() && k != PLACEHOLDER);
    let wants_proxy = *credentials == Credentials::Proxy;
    match (wants_proxy, sandbox, key, endpoint) {
        (true, SandboxMode::Off, key, _) => {
            p.detail = "sandbox.mode is off, so no egress proxy can hold the key".into();
            p.env
                .extend(key.filter(|_| source != var).map(|k| (var.to_owned(), k)));
        }
        (true, _, Some(key), Some(e)) => {
            p.held = Some(Held {
                host: e.host.clone(),
                port: e.port,
                tls: e.https,
                header: match provider {
                    ApiKind::Anthropic => AuthHeader::XApiKey,
                    ApiKind::Openai => AuthHeader::Bearer,
                },
                key,
            });
            p.env.push((var.to_owned(), PLACEHOLDER.to_owned()));
            p.keys = Keys::HeldByProxy;
            p.mode = Credentials::Proxy;
            p.detail = format!(
                "the egress proxy holds {source} and adds it for {}; {} sees {var}={PLACEHOLDER}",
                e.entry(),
                agent.as_str()
            );
        }
        (true, _, None, _) => {
            p.detail = format!(
                "{source} is not set, so {} uses its own login",
                agent.as_str()
            );
        }
        (true, _, Some(_), None) => {
            p.detail = "the endpoint is not an http(s) URL".into();
        }
        (false, _, key, _) => {
            p.detail = format!("credentials: env: {} reads {var} itself", agent.as_str());
            p.env
                .extend(key.filter(|_| source != var).map(|k| (var.to_owned(), k)));
        }
    }
    p
}

/// `abo doctor`'s line for an agent backend: its mode and why.
pub fn describe(plan: &Plan) -> String {
    format!("credentials {}: {}", plan.mode.as_str(), plan.detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use abo_core::config::AgentKind;
    use abo_core::ids::BackendName;

    fn agent(
        kind: AgentKind,
        base_url: Option<&str>,
        env: Option<&str>,
        c: Credentials,
    ) -> BackendSpec {
        BackendSpec::Agent {
            name: BackendName::new("b"),
            agent: kind,
            command: "x".into(),
            model: None,
            max_turns: None,
            permission_mode: None,
            args: Vec::new(),
            context_tokens: 0,
            base_url: base_url.map(str::to_owned),
            api_key_env: env.map(str::to_owned),
            credentials: c,
        }
    }

    fn check(b: &BackendSpec, sandbox: SandboxMode, expect: &str) {
        let vars = [("ANTHROPIC_API_KEY", "sk-ant-real"), ("GW_KEY", "gw-real")];
        let lookup = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        let p = plan(b, sandbox, lookup);
        let got = format!(
            "{} | held {} | env {:?} | {:?} | allow {}",
            p.detail,
            p.held.as_ref().map_or("none".into(), |h| format!(
                "{}:{} {:?} {}",
                h.host, h.port, h.header, h.key
            )),
            p.env,
            p.keys,
            p.endpoint.as_ref().map_or("none".into(), Endpoint::entry),
        );
        assert_eq!(got, expect);
    }

    #[test]
    fn where_each_backend_keeps_its_key() {
        use AgentKind::*;
        use Credentials::*;
        let req = SandboxMode::Required;
        check(
            &agent(ClaudeCode, None, None, Proxy),
            req,
            "the egress proxy holds ANTHROPIC_API_KEY and adds it for api.anthropic.com:443; claude-code sees ANTHROPIC_API_KEY=abo-proxy-held | held api.anthropic.com:443 XApiKey sk-ant-real | env [(\"ANTHROPIC_API_KEY\", \"abo-proxy-held\")] | HeldByProxy | allow api.anthropic.com:443",
        );
        check(
            &agent(
                ClaudeCode,
                Some("http://127.0.0.1:4000"),
                Some("GW_KEY"),
                Proxy,
            ),
            req,
            "the egress proxy holds GW_KEY and adds it for 127.0.0.1:4000; claude-code sees ANTHROPIC_API_KEY=abo-proxy-held | held 127.0.0.1:4000 XApiKey gw-real | env [(\"ANTHROPIC_API_KEY\", \"abo-proxy-held\")] | HeldByProxy | allow 127.0.0.1:4000",
        );
        // Control: `env` puts the key in the agent's environment, under the name the CLI reads.
        check(
            &agent(
                ClaudeCode,
                Some("http://gateway.lan:4000/v1"),
                Some("GW_KEY"),
                Env,
            ),
            req,
            "credentials: env: claude-code reads ANTHROPIC_API_KEY itself | held none | env [(\"ANTHROPIC_API_KEY\", \"gw-real\")] | Passed | allow gateway.lan:4000",
        );
        check(
            &agent(Codex, Some("http://[::1]:8080/v1"), None, Proxy),
            req,
            "OPENAI_API_KEY is not set, so codex uses its own login | held none | env [] | Passed | allow [::1]:8080",
        );
        check(
            &agent(ClaudeCode, None, None, Proxy),
            SandboxMode::Off,
            "sandbox.mode is off, so no egress proxy can hold the key | held none | env [] | Passed | allow api.anthropic.com:443",
        );
        check(
            &agent(Goose, None, None, Env),
            req,
            "goose reads its provider and key from its own configuration | held none | env [] | Passed | allow none",
        );
    }

    #[test]
    fn endpoints() {
        for (url, want) in [
            (
                "https://api.anthropic.com",
                Some((true, "api.anthropic.com", 443)),
            ),
            ("http://127.0.0.1:4000/v1", Some((false, "127.0.0.1", 4000))),
            ("http://LocalHost:11434", Some((false, "localhost", 11434))),
            ("http://[::1]:8080/v1", Some((false, "::1", 8080))),
            ("http://user:pw@gw.lan/v1", Some((false, "gw.lan", 80))),
            ("ftp://x", None),
        ] {
            let got = Endpoint::parse(url).map(|e| (e.https, e.host, e.port));
            assert_eq!(got, want.map(|(h, s, p)| (h, s.to_owned(), p)), "{url}");
        }
    }
}
