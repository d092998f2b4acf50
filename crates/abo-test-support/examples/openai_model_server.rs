//! The scripted OpenAI-compatible model server of the real-CLI tests, on its own, for running an
//! agent CLI by hand or timing one (`ops/bench-agents.sh`): `openai_model_server [http|https]
//! [429|quota]` prints `BASE_URL CA_FILE` on one line, then serves until killed.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a test fixture run by hand"
)]

use std::io::Write;

use abo_test_support::model_server_openai::{Failure, ModelServer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let server = match args.get(1).map(String::as_str) {
        Some("https") => ModelServer::https(),
        _ => ModelServer::http(),
    };
    match args.get(2).map(String::as_str) {
        Some("429") => server.fail(Failure::RateLimited),
        Some("quota") => server.fail(Failure::UsageLimit),
        _ => {}
    }
    let ca = server
        .ca_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("{} {ca}", server.base_url);
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}
