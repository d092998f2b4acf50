//! `landing.mode: pull-request`: a branch abo pushed, offered as a draft pull request on GitHub
//! (REST API) or a draft merge request on GitLab: the run branch with the run's summary as its
//! description, or the revert a scheduled verification proposes (`verify_schedule`).

use abo_core::config::{Landing, Provider};
use abo_core::spec::RunSpec;
use serde_json::{Value, json};

use crate::context::Ctx;

/// `owner/name` from a remote URL (`git@github.com:owner/name.git`, `https://host/owner/name`).
pub fn repo_from_url(url: &str) -> Option<String> {
    let path = if let Some((_, rest)) = url.split_once("://") {
        rest.split_once('/')?.1.to_owned()
    } else {
        url.split_once(':')?.1.to_owned()
    };
    let path = path
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_owned();
    path.contains('/').then_some(path)
}

/// The run's summary, as Markdown.
async fn description(ctx: &Ctx, spec: &RunSpec, run: &abo_core::ids::RunId) -> String {
    let events = ctx.store.run_events(run).await.unwrap_or_default();
    let s = abo_core::report::summary(&events, abo_core::ids::Timestamp(0));
    let mut out = format!("Run `{run}` of abo: {}\n\n", spec.title);
    for (head, items) in [
        ("Landed", &s.landed),
        ("Waiting for a person", &s.waiting),
        ("Failed", &s.failed),
    ] {
        if items.is_empty() {
            continue;
        }
        out.push_str(&format!("### {head}\n"));
        for i in items {
            out.push_str(&format!("- **{}** {}: {}\n", i.task, i.title, i.detail));
        }
        out.push('\n');
    }
    out.push_str(&format!("Cost: ${:.4}, {} tokens.\n", s.cost_usd, s.tokens));
    out
}

/// A pull (merge) request to open: the branch `head` (pushed to `landing.remote`) into `base`.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub head: &'a str,
    pub base: &'a str,
    pub title: &'a str,
    pub body: &'a str,
}

/// Opens the run branch's pull (merge) request, the run's summary as its description; returns
/// its URL and number.
pub async fn open_for_run(
    ctx: &Ctx,
    spec: &RunSpec,
    run: &abo_core::ids::RunId,
) -> Result<(String, Option<u64>), String> {
    let base = spec
        .base_branch
        .clone()
        .ok_or("the run has no base branch to open the pull request against")?;
    let title = format!("abo: {}", spec.title);
    let body = description(ctx, spec, run).await;
    let req = Request {
        head: &spec.branch,
        base: &base,
        title: &title,
        body: &body,
    };
    open(ctx, &spec.settings.landing, &req).await
}

/// Opens a draft pull (merge) request as `landing` says (provider, API, repository, token); one
/// that exists already for the same head and base (abo opened it, then stopped before recording
/// it) is found and returned, not opened twice. Returns its URL and number.
pub async fn open(
    ctx: &Ctx,
    l: &Landing,
    req: &Request<'_>,
) -> Result<(String, Option<u64>), String> {
    let Request {
        head,
        base,
        title,
        body,
    } = *req;
    let var = l.token_env();
    let token = std::env::var(&var).map_err(|_| format!("{var} is not set"))?;
    let repo = match &l.repo {
        Some(r) => r.clone(),
        None => {
            let url = ctx
                .git
                .run(&["remote", "get-url", &l.remote])
                .await
                .map_err(|e| e.to_string())?;
            repo_from_url(url.trim()).ok_or_else(|| {
                format!(
                    "cannot tell the repository from {}: set landing.repo",
                    url.trim()
                )
            })?
        }
    };
    let api = l.api_url();
    let api = api.trim_end_matches('/');
    let req = match l.provider() {
        Provider::Github => ctx
            .http()
            .post(format!("{api}/repos/{repo}/pulls"))
            .bearer_auth(&token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .json(
                &json!({ "title": title, "head": head, "base": base, "body": body, "draft": true }),
            ),
        Provider::Gitlab => {
            let project = gitlab_project(&repo);
            ctx.http()
                .post(format!("{api}/projects/{project}/merge_requests"))
                .header("private-token", &token)
                .json(&json!({
                    "source_branch": head, "target_branch": base,
                    "title": format!("Draft: {title}"), "description": body,
                }))
        }
    };
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut v: Value = resp.json().await.unwrap_or(Value::Null);
    // One exists for the run branch already (abo opened it, then stopped before recording it):
    // that one is the run's, not a second.
    let exists = match l.provider() {
        Provider::Github => status.as_u16() == 422,
        Provider::Gitlab => status.as_u16() == 409,
    };
    if exists {
        let found = match l.provider() {
            Provider::Github => {
                let owner = repo.split('/').next().unwrap_or_default();
                ctx.http()
                    .get(format!("{api}/repos/{repo}/pulls"))
                    .query(&[
                        ("head", format!("{owner}:{head}")),
                        ("base", base.to_owned()),
                        ("state", "open".to_owned()),
                    ])
                    .bearer_auth(&token)
                    .header("accept", "application/vnd.github+json")
                    .header("x-github-api-version", "2022-11-28")
            }
            Provider::Gitlab => ctx
                .http()
                .get(format!(
                    "{api}/projects/{}/merge_requests",
                    gitlab_project(&repo)
                ))
                .query(&[
                    ("source_branch", head.to_owned()),
                    ("target_branch", base.to_owned()),
                    ("state", "opened".to_owned()),
                ])
                .header("private-token", &token),
        };
        let resp = found.send().await.map_err(|e| e.to_string())?;
        let list: Value = resp.json().await.unwrap_or(Value::Null);
        if let Some(first) = list.get(0) {
            v = first.clone();
        } else {
            return Err(format!(
                "HTTP {}: one exists for {head} but none was found",
                status.as_u16(),
            ));
        }
    } else if !status.is_success() {
        let msg = v["message"].as_str().unwrap_or("").to_owned();
        return Err(format!("HTTP {}: {msg}", status.as_u16()));
    }
    let (url, number) = match l.provider() {
        Provider::Github => (v["html_url"].as_str(), v["number"].as_u64()),
        Provider::Gitlab => (v["web_url"].as_str(), v["iid"].as_u64()),
    };
    let url = url.ok_or("the reply has no URL")?.to_owned();
    Ok((url, number))
}

/// A GitLab project path as its API names it (`group%2Fproject`).
fn gitlab_project(repo: &str) -> String {
    repo.bytes()
        .map(|b| match b {
            b'/' => "%2F".to_owned(),
            b => (b as char).to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_from_remote_urls() {
        assert_eq!(
            repo_from_url("git@github.com:acme/app.git").as_deref(),
            Some("acme/app")
        );
        assert_eq!(
            repo_from_url("https://github.com/acme/app").as_deref(),
            Some("acme/app")
        );
        assert_eq!(
            repo_from_url("https://gitlab.example/group/sub/app.git").as_deref(),
            Some("group/sub/app")
        );
        assert_eq!(repo_from_url("/srv/git/app.git"), None);
    }
}
