//! Notifications: signed webhooks (generic JSON and Slack), retried; email to a local SMTP sink;
//! each delivery a `notify.sent` event.

use abo_test_support::TestRepo;
use abo_test_support::smtp::SmtpSink;
use abo_test_support::stub::{Canned, StubServer};

use crate::{abo_env, config, events};

#[test]
fn webhooks_and_email_are_delivered_signed_retried_and_recorded() {
    // The generic hook fails once, then takes it; the Slack one takes it at once.
    let generic = StubServer::start(vec![Canned::status(503, "{}"), Canned::ok("{}")]);
    let slack = StubServer::start(vec![Canned::ok("ok")]);
    let sink = SmtpSink::start();
    let repo = TestRepo::new();
    config(
        &repo,
        &format!(
            "version: 1\nautonomy: {{ overrides: {{ merge: A2 }} }}\nnotify:\n  webhooks:\n    - {{ url: '{g}/hook', events: [run.finished], secret_env: ABO_HOOK_KEY }}\n    - {{ url: '{s}/slack', format: slack, events: [run.finished] }}\n  email: {{ smtp: '{m}', from: abo@example.test, to: [me@example.test], events: [run.finished] }}\n",
            g = generic.url,
            s = slack.url,
            m = sink.addr
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: one, title: One, run: 'echo 1 > one.txt' }\n",
    );
    let key = "hook-key-0123456789";
    let out = abo_env(
        &repo,
        &["run", b.to_str().unwrap(), "--json"],
        &[("ABO_HOOK_KEY", key.to_owned())],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let run = doc["run"]["id"].as_str().unwrap().to_owned();

    let got = generic.requests();
    assert_eq!(got.len(), 2, "retried after the 503: {got:?}");
    let last = &got[1];
    assert_eq!(last.header("x-abo-event"), Some("run.finished"));
    assert_eq!(last.body["kind"], "run.finished");
    assert_eq!(last.body["run"], run.as_str());
    let want = format!(
        "sha256={}",
        abo_runtime::notify::sign(key.as_bytes(), last.raw.as_bytes())
    );
    assert_eq!(last.header("x-abo-signature"), Some(want.as_str()));
    assert!(!last.raw.contains(key), "the key itself is never sent");

    let s = slack.requests();
    assert_eq!(s.len(), 1);
    let text = s[0].body["text"].as_str().unwrap();
    assert!(text.contains(&run) && text.contains("1 landed"), "{text}");
    assert_eq!(
        s[0].header("x-abo-signature"),
        None,
        "unsigned without a key"
    );

    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["me@example.test"]);
    assert!(
        mails[0].data.contains("Subject: abo run"),
        "{}",
        mails[0].data
    );

    let sent: Vec<serde_json::Value> = events(&repo, &run)
        .into_iter()
        .filter(|e| e["kind"] == "notify.sent")
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent.iter()
            .all(|e| e["data"]["ok"] == true && e["data"]["event"] == "run.finished")
    );
    let hook = sent
        .iter()
        .find(|e| e["data"]["target"].as_str().unwrap().ends_with("/hook"))
        .unwrap();
    assert_eq!(hook["data"]["tries"], 2);
}

/// abo stopped between `run.finished` and delivering its notification: resuming the owed end
/// delivers it, and the log holds one `notify.sent` for it; a settled run sends nothing more.
#[test]
fn a_notification_owed_by_a_finished_run_is_delivered_on_resume_once() {
    let hook = StubServer::start(vec![Canned::ok("{}"), Canned::ok("{}"), Canned::ok("{}")]);
    let repo = TestRepo::new();
    config(
        &repo,
        &format!(
            "version: 1\nsandbox: {{ mode: off }}\nnotify:\n  webhooks:\n    - {{ url: '{}/hook', events: [run.finished] }}\n",
            hook.url
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: a, title: A, run: 'echo a > a.txt' }\n",
    );
    let (code, doc, stderr) = crate::run(&repo, &b, &[]);
    assert_eq!(code, 0, "{stderr}");
    let id = doc["run"]["id"].as_str().unwrap().to_owned();
    let finished = events(&repo, &id)
        .iter()
        .find(|e| e["kind"] == "run.finished")
        .unwrap()["seq"]
        .as_i64()
        .unwrap();
    // Everything after run.finished is lost: its notify.sent and the run.merge.
    crate::crash::truncate_log(&repo.path, finished + 1);
    assert_eq!(hook.requests().len(), 1);
    let out = crate::abo(&repo, &["resume", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        hook.requests().len(),
        2,
        "delivered again: its delivery was not recorded"
    );
    let sent: Vec<serde_json::Value> = events(&repo, &id)
        .into_iter()
        .filter(|e| e["kind"] == "notify.sent")
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["data"]["seq"], finished);
    assert_eq!(crate::abo(&repo, &["resume", &id]).code, 2);
    assert_eq!(hook.requests().len(), 2, "nothing more once settled");
}

#[test]
fn the_summary_goes_out_as_a_digest_to_slack_compatible_hooks_and_email() {
    let generic = StubServer::start(vec![Canned::ok("{}")]);
    let slack = StubServer::start(vec![Canned::ok("ok")]);
    let sink = SmtpSink::start();
    let repo = TestRepo::new();
    config(
        &repo,
        &format!(
            "version: 1\nnotify:\n  digest: \"07:30\"\n  webhooks:\n    - {{ url: '{g}/hook', events: [budget.alert] }}\n    - {{ url: '{s}/slack', format: slack, events: [budget.alert] }}\n  email: {{ smtp: '{m}', from: abo@example.test, to: [me@example.test], events: [budget.alert] }}\n",
            g = generic.url,
            s = slack.url,
            m = sink.addr
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - { id: one, title: One, run: 'echo 1 > one.txt' }\n  - { id: bad, title: Bad, run: 'exit 1', max_attempts: 1 }\n",
    );
    let out = abo_env(&repo, &["run", b.to_str().unwrap()], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let out = abo_env(&repo, &["summary", "--notify"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.matches("digest sent to").count(),
        3,
        "{}",
        out.stdout
    );

    let s = slack.requests();
    let text = s[0].body["text"].as_str().unwrap();
    assert!(
        text.starts_with("abo: 1 landed, 0 waiting for you, 1 failed; $0.00\n"),
        "{text}"
    );
    assert!(text.contains("retry: abo retry bad --run"), "{text}");
    assert!(text.contains("1 attempt"), "{text}");
    let g = generic.requests();
    assert_eq!(g[0].header("x-abo-event"), Some("digest"));
    assert_eq!(g[0].body["kind"], "digest");
    assert_eq!(g[0].body["summary"]["landed"][0]["task"], "one");
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].data.contains("Subject: abo: 1 landed") && mails[0].data.contains("failed:"),
        "{}",
        mails[0].data
    );

    // A digest time that is not one is refused where `abo daemon` reads it.
    let text = repo.read("abo.yml").replace("\"07:30\"", "\"7h30\"");
    repo.write("abo.yml", &text);
    let out = abo_env(&repo, &["daemon", "--addr", "127.0.0.1:0"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("notify.digest"), "{}", out.stderr);
}

/// The attack: the agent names a link `<!channel> urgent` and points it at
/// `/<https://evil.example/login|Approve in the abo dashboard>`; the approval's reason quotes both,
/// and Slack reads `<...>` as markup (a mention of everyone, a link under any label). The Slack
/// hook gets them escaped as text; the control, the generic hook's JSON, carries the reason as
/// the policy wrote it, markup and all.
#[test]
fn an_agents_names_reach_slack_as_text_not_markup() {
    let generic = StubServer::start(vec![Canned::ok("{}")]);
    let slack = StubServer::start(vec![Canned::ok("ok")]);
    let repo = TestRepo::new();
    config(
        &repo,
        &format!(
            "version: 1\nattempts: {{ max: 1 }}\nnotify:\n  webhooks:\n    - {{ url: '{g}/hook', events: [task.approval_requested] }}\n    - {{ url: '{s}/slack', format: slack, events: [task.approval_requested] }}\n",
            g = generic.url,
            s = slack.url,
        ),
    );
    let b = repo.write_outside(
        "b.yml",
        "tasks:\n  - id: a\n    title: Add notes\n    run: |\n      ln -s '/<https://evil.example/login|Approve in the abo dashboard>' '<!channel> urgent'\n",
    );
    let out = abo_env(&repo, &["run", b.to_str().unwrap(), "--json"], &[]);
    assert_eq!(out.code, 4, "waits for approval: {}", out.stderr);

    let s = slack.requests();
    assert_eq!(s.len(), 1, "{s:?}");
    let text = s[0].body["text"].as_str().unwrap();
    assert!(
        text.contains("&lt;!channel&gt; urgent is a symbolic link out of the repository (to /&lt;https://evil.example/login|Approve in the abo dashboard&gt;)"),
        "{text}"
    );
    assert!(!text.contains('<') && !text.contains('>'), "{text}");

    let g = generic.requests();
    let reasons = g[0].body["data"]["reasons"].to_string();
    assert!(
        reasons.contains("<!channel> urgent is a symbolic link")
            && reasons.contains("<https://evil.example/login|Approve in the abo dashboard>"),
        "{reasons}"
    );
}
