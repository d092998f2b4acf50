//! Requests that arrive together, answered by one git process: landings side by side prove their
//! commits side by side, and each proof would otherwise start its own `git diff` and its own `git
//! notes add` (two `notes add` at once even fail: each locks the notes ref). A request made while
//! a batch is being answered waits for the next batch, which takes every request made meanwhile.

use tokio::sync::oneshot;

/// The requests waiting, and the turn of whoever answers the next batch.
pub(super) struct Batches<Q, A> {
    pending: std::sync::Mutex<Vec<(Q, oneshot::Sender<A>)>>,
    turn: tokio::sync::Mutex<()>,
}

impl<Q, A> Default for Batches<Q, A> {
    fn default() -> Self {
        Self {
            pending: std::sync::Mutex::default(),
            turn: tokio::sync::Mutex::default(),
        }
    }
}

impl<Q, A> std::fmt::Debug for Batches<Q, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("git::Batches")
    }
}

impl<Q, A> Batches<Q, A> {
    /// `request`'s answer, computed by `answer` in a batch with the requests made meanwhile:
    /// `answer` takes the batch and returns one answer for each request, in their order. `None`
    /// when no answer came (the caller that was answering the batch was cancelled).
    pub(super) async fn ask(
        &self,
        request: Q,
        answer: impl AsyncFnOnce(Vec<Q>) -> Vec<A>,
    ) -> Option<A> {
        let (done, answered) = oneshot::channel();
        self.lock().push((request, done));
        {
            let _turn = self.turn.lock().await;
            let batch = std::mem::take(&mut *self.lock());
            // Empty when the batch before took this request with its own.
            if !batch.is_empty() {
                let (requests, waiting): (Vec<Q>, Vec<_>) = batch.into_iter().unzip();
                let answers = answer(requests).await;
                for (done, a) in waiting.into_iter().zip(answers) {
                    let _ = done.send(a);
                }
            }
        }
        answered.await.ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Q, oneshot::Sender<A>)>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
