//! Proof of change: for every landed task, a JSON proof (the shape of seed 003's Proof-of-Change:
//! diff reference and stats, rationale, gates, policy verdict and reasons, provenance) signed with
//! the repository's Ed25519 key (`.abo/proof.key`), attached to the commit as a git note
//! (`refs/notes/abo-proof`). `abo verify COMMIT` checks the signature with `.abo/proof.pub` and the
//! proof against the commit's actual diff.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use abo_core::event::{EventBody, GateStage};
use abo_core::ids::{AttemptId, CommitSha};

use crate::context::Ctx;

pub const NOTES_REF: &str = "abo-proof";

/// The repository's signing key: created once (by `abo init`, or the first run), kept in `.abo/`.
pub fn load_or_create_key(abo_dir: &Path) -> std::io::Result<SigningKey> {
    let path = abo_dir.join("proof.key");
    if let Ok(hexed) = std::fs::read_to_string(&path) {
        let bytes = hex::decode(hexed.trim()).map_err(std::io::Error::other)?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| std::io::Error::other("proof.key is not 32 bytes"))?;
        return Ok(SigningKey::from_bytes(&seed));
    }
    let mut seed = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let key = SigningKey::from_bytes(&seed);
    std::fs::create_dir_all(abo_dir)?;
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        std::io::Write::write_all(&mut f, hex::encode(seed).as_bytes())?;
    }
    std::fs::write(
        abo_dir.join("proof.pub"),
        hex::encode(key.verifying_key().to_bytes()),
    )?;
    Ok(key)
}

/// The trusted public key, from `.abo/proof.pub`.
pub fn trusted_key(abo_dir: &Path) -> Option<VerifyingKey> {
    let bytes = hex::decode(
        std::fs::read_to_string(abo_dir.join("proof.pub"))
            .ok()?
            .trim(),
    )
    .ok()?;
    VerifyingKey::from_bytes(&bytes.try_into().ok()?).ok()
}

/// What a commit's diff is: its hash, line counts and files, computed from git.
async fn diff_facts(ctx: &Ctx, commit: &CommitSha) -> Result<Value, String> {
    // The numstat records, an empty line, then the patch, byte for byte what `git diff
    // --no-color --no-renames` alone prints (the hash proofs made before carry).
    let out = ctx
        .git
        .commit_diff(commit)
        .await
        .map_err(|e| e.to_string())?;
    let (numstat, diff) = out.split_once("\n\n").unwrap_or((out.as_str(), ""));
    let (mut added, mut removed, mut files) = (0u64, 0u64, Vec::new());
    for l in numstat.lines() {
        let mut p = l.splitn(3, '\t');
        added += p.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        removed += p.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        if let Some(f) = p.next() {
            files.push(f.to_owned());
        }
    }
    let sha = hex::encode(Sha256::digest(diff.as_bytes()));
    Ok(
        json!({ "uri": format!("git:{commit}"), "sha256": sha, "lines_added": added, "lines_removed": removed, "files_modified": files }),
    )
}

/// Builds, signs and attaches the proof of a landed attempt of the task titled `title`. It reads
/// the task's own events (the store's `events_task` index), not the run's whole log: a proof costs
/// the same in a run of 10 tasks or 1,000.
pub async fn prove(
    ctx: &Ctx,
    title: &str,
    attempt: &AttemptId,
    commit: &CommitSha,
) -> Result<(), String> {
    let events = ctx
        .store
        .task_events(&attempt.run, &attempt.task)
        .await
        .map_err(|e| e.to_string())?;
    let mine = events.iter();
    let (mut rationale, mut backend, mut model, mut prompt, mut started) =
        (None, None, None, None, None);
    let (mut gates, mut policy, mut approvals) = (Vec::new(), Value::Null, Vec::new());
    let mut landed_at = None;
    for e in mine {
        match &e.event.body {
            EventBody::TaskStarted {
                attempt: a,
                backend: b,
                ..
            } if *a == attempt.attempt => {
                backend = Some(b.to_string());
                started = Some(e.event.at.to_rfc3339());
            }
            EventBody::TaskBackendFinished {
                attempt: a,
                message,
                model: m,
                prompt: p,
                ..
            } if *a == attempt.attempt => {
                rationale = message.clone();
                model = m.clone();
                prompt = p.clone();
            }
            EventBody::TaskGate {
                attempt: a,
                name,
                passed,
                stage,
                log,
                ..
            } if *a == attempt.attempt => {
                let stage = if *stage == GateStage::Merged {
                    "merged"
                } else {
                    "attempt"
                };
                gates.push(json!({ "name": name, "passed": passed, "stage": stage, "log": log }));
            }
            EventBody::TaskPolicy {
                attempt: a,
                verdict,
                deny,
                require_approval,
                risk,
                ..
            } if *a == attempt.attempt => {
                policy = json!({ "verdict": verdict.as_str(), "deny": deny, "require_approval": require_approval, "risk": risk });
            }
            EventBody::TaskApproved { approval, reason } => approvals.push(
                json!({ "approval": approval, "reason": reason, "at": e.event.at.to_rfc3339() }),
            ),
            EventBody::TaskLanded { attempt: a, .. } if *a == attempt.attempt => {
                landed_at = Some(e.event.at.to_rfc3339())
            }
            _ => {}
        }
    }
    let task_title = title.to_owned();
    let risk = policy["risk"].as_str().unwrap_or("unknown").to_owned();
    let proof = json!({
        "change_id": attempt.to_string(),
        "commit": commit,
        "diff": diff_facts(ctx, commit).await?,
        "rationale": rationale.unwrap_or(task_title),
        "risks": [{ "description": "policy risk class", "severity": risk }],
        "tests": { "gates": gates },
        "validation": { "policy": policy, "approvals": approvals },
        "provenance": {
            "run": attempt.run, "task": attempt.task, "attempt": attempt.attempt,
            "backend": backend, "model": model, "prompt_hash": prompt,
            "started_at": started, "landed_at": landed_at,
        },
    });
    let key =
        load_or_create_key(&ctx.root.join(".abo")).map_err(|e| format!("the proof key: {e}"))?;
    let canonical = proof.to_string();
    let signature = key.sign(canonical.as_bytes());
    let envelope = json!({ "proof": proof, "signature": hex::encode(signature.to_bytes()), "public_key": hex::encode(key.verifying_key().to_bytes()) });
    let text = envelope.to_string();
    let _ = ctx.artifacts.put(text.as_bytes());
    ctx.git
        .set_note(NOTES_REF, commit, &text)
        .await
        .map_err(|e| e.to_string())
}

/// What `abo verify` found.
#[derive(Debug)]
pub struct Verified {
    pub change_id: String,
    pub problems: Vec<String>,
}

/// Checks a commit against its proof: the signature (with the trusted key) and the diff's facts.
pub async fn verify(ctx: &Ctx, commit: &str) -> Result<Verified, String> {
    let full = ctx
        .git
        .rev_parse(commit)
        .await
        .map_err(|_| format!("no commit `{commit}`"))?;
    let note = ctx
        .git
        .run(&["notes", "--ref", NOTES_REF, "show", full.as_str()])
        .await
        .map_err(|_| format!("commit {} has no proof of change", full.short()))?;
    let envelope: Value =
        serde_json::from_str(note.trim()).map_err(|e| format!("the proof is not JSON: {e}"))?;
    let mut problems = Vec::new();
    let proof = &envelope["proof"];
    match trusted_key(&ctx.root.join(".abo")) {
        None => problems.push("no trusted key in .abo/proof.pub".to_owned()),
        Some(key) => {
            let sig = hex::decode(envelope["signature"].as_str().unwrap_or(""))
                .ok()
                .and_then(|b| <[u8; 64]>::try_from(b).ok())
                .map(|b| Signature::from_bytes(&b));
            match sig {
                Some(sig) if key.verify(proof.to_string().as_bytes(), &sig).is_ok() => {}
                _ => problems
                    .push("the signature does not match the proof and the trusted key".to_owned()),
            }
        }
    }
    if proof["commit"].as_str() != Some(full.as_str()) {
        problems.push(format!(
            "the proof is for commit {}, not {}",
            proof["commit"].as_str().unwrap_or("?"),
            full
        ));
    }
    let facts = diff_facts(ctx, &full).await?;
    for field in ["sha256", "lines_added", "lines_removed", "files_modified"] {
        if proof["diff"][field] != facts[field] {
            problems.push(format!(
                "diff.{field} is {} in the proof but {} in the commit",
                proof["diff"][field], facts[field]
            ));
        }
    }
    Ok(Verified {
        change_id: proof["change_id"].as_str().unwrap_or("?").to_owned(),
        problems,
    })
}
